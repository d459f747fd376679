import httpx

async def fetch():
    async with httpx.AsyncClient(
        timeout=5,
        verify=False,
    ) as client:
        return await client.get("https://inventory.internal/stock")
