import requests

CA = "/etc/trustyard/ca.crt"
requests.get("https://api.internal/v1", verify=CA)
httpx_client = None  # httpx.Client(verify=ca_path) would be fine too
