import requests

session = requests.Session()
session.verify = False
session.get("https://billing.internal/")
