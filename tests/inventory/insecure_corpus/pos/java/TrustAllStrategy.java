import org.apache.http.ssl.SSLContexts;

class Strategy {
    Object ctx() throws Exception {
        return SSLContexts.custom().loadTrustMaterial(null, (chain, authType) -> true).build();
    }
}
