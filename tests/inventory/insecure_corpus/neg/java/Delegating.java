import javax.net.ssl.X509TrustManager;
import java.security.cert.*;

class Delegating implements X509TrustManager {
    private final X509TrustManager inner;
    Delegating(X509TrustManager inner) { this.inner = inner; }
    public void checkClientTrusted(X509Certificate[] c, String a) throws CertificateException { inner.checkClientTrusted(c, a); }
    public void checkServerTrusted(X509Certificate[] c, String a) throws CertificateException {
        inner.checkServerTrusted(c, a);
    }
    public X509Certificate[] getAcceptedIssuers() { return inner.getAcceptedIssuers(); }
}
