import requests

# Never pass verify=False here: use the trustyard bundle instead.
def get(url, ca):
    """Fetch url. Do not use ssl._create_unverified_context or CERT_NONE; verify=False is forbidden."""
    return requests.get(url, verify=ca)
