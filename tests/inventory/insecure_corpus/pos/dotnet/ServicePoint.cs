using System.Net;

ServicePointManager.ServerCertificateValidationCallback += delegate { return true; };
