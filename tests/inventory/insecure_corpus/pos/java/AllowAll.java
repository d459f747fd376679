import org.apache.http.conn.ssl.SSLSocketFactory;

class Legacy {
    void setup(SSLSocketFactory sf) {
        sf.setHostnameVerifier(SSLSocketFactory.ALLOW_ALL_HOSTNAME_VERIFIER);
    }
}
