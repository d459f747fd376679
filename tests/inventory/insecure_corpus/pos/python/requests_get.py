import requests

resp = requests.get("https://api.internal/v1/items", verify=False)
