"""Request paths the identity policy refuses to judge.

The policy must decide on the path the application routes. Starlette (and most ASGI
routers) route the percent-decoded ``scope["path"]`` as it is, without resolving ``..``;
a policy that normalized first would judge ``/admin/../public`` as ``/public`` while the
application served it under ``/admin``. Rather than guess what each router does with
ambiguous spellings, :class:`~trustyard.tls.asgi.IdentityMiddleware` refuses them with 400
before the policy runs, looking at both ``scope["path"]`` and ``scope["raw_path"]``:

- a ``.`` or ``..`` segment, raw or percent-encoded (``%2e``, ``%2E``, ``.%2e``...)
- an encoded ``/`` (``%2f``), an encoded ``.`` anywhere (``%2e``)
- a backslash, raw or encoded (``%5c``)
- a NUL, raw or encoded (``%00``)

Every other path is judged exactly as the application sees it: no normalization, so
``//admin`` is not ``/admin`` to the policy either.
"""

from __future__ import annotations

import re

# Encoded characters refused wherever they appear (raw_path, or path after a double encoding).
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def path_problem(path: str, raw_path: bytes | str | None = None) -> str | None:
    """Why the policy refuses to judge this request path, or None when it is unambiguous."""
    candidates = [path]
    if raw_path is not None:
        candidates.append(raw_path.decode("latin-1") if isinstance(raw_path, (bytes, bytearray)) else raw_path)
    for text in candidates:
        if "\x00" in text:
            return "a NUL character"
        if "\\" in text:
            return "a backslash"
        encoded = _ENCODED.search(text)
        if encoded:
            return f"an encoded character {encoded.group(0)!r}"
        for segment in text.split("/"):
            if segment in (".", ".."):
                return f"a {segment!r} path segment"
    return None
