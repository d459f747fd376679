import org.apache.http.conn.ssl.NoopHostnameVerifier;
import org.apache.http.conn.ssl.DefaultHostnameVerifier;

class Verifiers {
    Object v = new DefaultHostnameVerifier();
}
