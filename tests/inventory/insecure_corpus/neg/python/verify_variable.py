def call(session, url, verify_tls):
    verify = verify_tls
    return session.get(url, verify=verify)
