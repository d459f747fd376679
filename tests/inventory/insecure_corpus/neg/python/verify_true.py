import requests

requests.get("https://api.internal/v1", verify=True)
