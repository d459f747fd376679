"""Diagnosis: name the TLS layer that fails and why.

    probe     one unverified connection that keeps the chain the server actually sent
    doctor    probe + layered classification (network, protocol, client_auth, trust,
              identity, validity) -> Verdict
    explain   error text from curl, OpenSSL, Python, Go, Java, Node, rustls, gRPC ->
              the same layers and codes, driven by the data file ``corpus.toml``
"""
