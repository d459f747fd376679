"""The ASGI lifespan protocol for the small apps the end-to-end tests run under uvicorn."""

from __future__ import annotations

from typing import Any


async def handle_lifespan(receive: Any, send: Any) -> None:
    """Acknowledge startup and shutdown; return once the server has shut the app down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
