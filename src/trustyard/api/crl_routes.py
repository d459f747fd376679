"""``GET /crl/<issuer id>/<shard>.crl``: the CRLs the generation job (``ca/crl_job.py``) stored,
the same bytes on every replica.

The path is checked before the database is touched (16 lower-case hex digits, a shard below
``[crl] shards``): anything else is a 404 at once; a well-formed one costs one primary-key
lookup. Caches may keep an answer until the CRL's nextUpdate, but no longer than ``[crl]
delay``: a revocation reaches the shard within that delay, and so reaches a cache's client.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..ca.authority import Authority
from ..ca.config import Config
from ..errors import NotFound
from ..store.crls import CrlStore

_ISSUER = re.compile(r"[0-9a-f]{16}")
_SHARD = re.compile(r"[0-9]{1,4}")
CONTENT_TYPE = "application/pkix-crl"  # RFC 2585


class CrlRoutes:
    def __init__(self, authority: Authority, config: Config) -> None:
        self.store = CrlStore(authority.store)
        self.shards = config.crl.shards
        self.max_age = int(config.crl.duration("delay").total_seconds())

    async def get(self, request: Request) -> Response:
        issuer, text = request.path_params["issuer"], request.path_params["shard"]
        if not _ISSUER.fullmatch(issuer) or not _SHARD.fullmatch(text) or int(text) >= self.shards:
            raise NotFound("no such CRL: /crl/<issuer id: 16 hex digits>/<shard>.crl")
        shard = int(text)
        published = await run_in_threadpool(self.store.get, issuer, shard)
        if published is None:
            raise NotFound(f"no CRL {issuer}/{shard} (yet)")
        tag = f'"{issuer}-{shard}-{published.number}"'
        left = int((published.next_update - datetime.now(UTC)).total_seconds())
        headers = {"ETag": tag, "Last-Modified": format_datetime(published.this_update, usegmt=True),
                   "Cache-Control": f"public, max-age={max(0, min(left, self.max_age))}"}
        inm = request.headers.get("if-none-match", "")
        if tag in {t.strip().removeprefix("W/") for t in inm.split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(published.der, media_type=CONTENT_TYPE, headers=headers)


def crl_routes(authority: Authority, config: Config) -> list[Route]:
    return [Route("/crl/{issuer}/{shard}.crl", CrlRoutes(authority, config).get, methods=["GET"])]
