import ssl

ctx = ssl.create_default_context(cafile="ca.crt")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.check_hostname = True
