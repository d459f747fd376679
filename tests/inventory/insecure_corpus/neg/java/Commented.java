class Doc {
    /* Do not use NoopHostnameVerifier or ALLOW_ALL_HOSTNAME_VERIFIER:
       public void checkServerTrusted(X509Certificate[] c, String a) {} trusts everyone. */
    int x = 1;
}
