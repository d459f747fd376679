using System.Net.Http;

class Factory {
    HttpClient Make() {
        var h = new HttpClientHandler {
            ServerCertificateCustomValidationCallback =
                (req, cert, chain, errs) => { return true; }
        };
        return new HttpClient(h);
    }
}
