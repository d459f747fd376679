import aiohttp, ssl

ctx = ssl.create_default_context(cafile="ca.crt")
conn = aiohttp.TCPConnector(ssl=ctx)
