using System.Net.Http;

var handler = new HttpClientHandler();
handler.ServerCertificateCustomValidationCallback = (message, cert, chain, errors) => true;
var client = new HttpClient(handler) { BaseAddress = new Uri("https://ledger.internal/") };
