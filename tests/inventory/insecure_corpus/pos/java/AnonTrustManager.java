import javax.net.ssl.*;
import java.security.cert.*;

class Clients {
    static TrustManager[] trustAll = new TrustManager[] {
        new X509TrustManager() {
            public X509Certificate[] getAcceptedIssuers() { return null; }
            public void checkClientTrusted(X509Certificate[] certs, String t) { }
            public void checkServerTrusted(X509Certificate[] certs, String t)
                    throws CertificateException {
            }
        }
    };
}
