import aiohttp

async def main(session: aiohttp.ClientSession):
    return await session.get("https://search.internal/q", verify_ssl=False)
