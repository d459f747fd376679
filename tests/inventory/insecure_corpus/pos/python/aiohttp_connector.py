import aiohttp

async def main():
    conn = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        await s.get("https://metrics.internal/")
