import httpx

client = httpx.Client(base_url="https://orders.internal", verify=False)
