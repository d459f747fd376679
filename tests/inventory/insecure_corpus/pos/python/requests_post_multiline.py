import requests

r = requests.post(
    "https://payments.internal/charge",
    json={"amount": 3},
    verify=False,
)
