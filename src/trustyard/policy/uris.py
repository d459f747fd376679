"""URI names are matched exactly: one function, :func:`uri_matches`, for issuance and for
the mTLS identity policy (``trustyard.tls.policy``).

A URI pattern (``spiffe://prod.internal/orders``, or a prefix ``spiffe://prod.internal/billing/*``)
only ever matches a URI in *normal form*, so that a prefix cannot be talked around with
``spiffe://prod.internal/billing/../admin`` and no two spellings name one identity:

- SPIFFE IDs follow the SPIFFE ID rules: ``spiffe://`` in lowercase, a trust domain of
  ``[a-z0-9._-]``, then zero or more ``/segment`` of ``[A-Za-z0-9._-]``; no ``.``/``..``
  segment, no empty segment or trailing ``/``, no percent-encoding, no port, userinfo,
  query or fragment; at most 2048 bytes.
- other URIs (``https://host[:port]/path``): a lowercase scheme and host, no userinfo,
  query, fragment, percent-encoding, backslash, ``.``/``..`` segment or empty segment (one
  trailing ``/`` is allowed).

:func:`uri_problem` says why a URI is not in normal form; issuance refuses such names
(``policy.rules.uri_names_exact``), and :func:`uri_matches` never matches them.
"""

from __future__ import annotations

import re

MAX_URI_LENGTH = 2048

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_SPIFFE_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SPIFFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST = re.compile(r"^(?:[a-z0-9._-]+|\[[0-9a-f:.]+\])$")
_PORT = re.compile(r"^[0-9]{1,5}$")
# RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ":" and "@".
_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")


def uri_problem(value: str) -> str | None:
    """Why ``value`` is not a URI in normal form, or None when it is."""
    if not isinstance(value, str) or not value:
        return "empty URI"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_URI_LENGTH:
        return f"longer than {MAX_URI_LENGTH} bytes"
    if not value.isascii() or any(not c.isprintable() or c.isspace() for c in value):
        return "non-ASCII, control or space characters"
    if "%" in value:
        return "percent-encoding"
    if "\\" in value:
        return "a backslash"
    if "?" in value:
        return "a query"
    if "#" in value:
        return "a fragment"
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "no scheme://authority"
    if scheme.lower() == "spiffe":
        return _spiffe_problem(scheme, rest)
    if not _SCHEME.match(scheme):
        return f"scheme {scheme!r} is not lowercase letters, digits, +, . or -"
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        return "userinfo in the authority"
    host, colon, port = authority.partition(":") if not authority.startswith("[") else _split_ipv6(authority)
    if not _HOST.match(host):
        return f"host {host!r} is not lowercase letters, digits, '.', '-' or '_'"
    if colon and not _PORT.match(port):
        return f"port {port!r} is not a number"
    if not slash:
        return None
    segments = path.split("/")
    if segments[-1] == "" and len(segments) > 1:
        segments.pop()  # one trailing "/" is allowed
    elif segments == [""]:
        return None  # "https://host/"
    return _segments_problem(segments, _SEGMENT)


def _split_ipv6(authority: str) -> tuple[str, str, str]:
    end = authority.find("]")
    host, tail = authority[:end + 1], authority[end + 1:]
    if tail and not tail.startswith(":"):
        return authority, "", ""
    return host, tail[:1], tail[1:]


def _spiffe_problem(scheme: str, rest: str) -> str | None:
    if scheme != "spiffe":
        return "the SPIFFE scheme must be lowercase spiffe://"
    trust_domain, slash, path = rest.partition("/")
    if "@" in trust_domain:
        return "userinfo in a SPIFFE ID"
    if ":" in trust_domain:
        return "a port in a SPIFFE ID"
    if not trust_domain:
        return "an empty trust domain"
    if not _SPIFFE_TRUST_DOMAIN.match(trust_domain):
        return f"trust domain {trust_domain!r} is not lowercase letters, digits, '.', '-' or '_'"
    if not slash:
        return None
    return _segments_problem(path.split("/"), _SPIFFE_SEGMENT)


def _segments_problem(segments: list[str], allowed: re.Pattern[str]) -> str | None:
    for segment in segments:
        if segment == "":
            return "an empty path segment (// or a trailing /)"
        if segment in (".", ".."):
            return f"a {segment!r} path segment"
        if not allowed.match(segment):
            return f"path segment {segment!r} has characters outside {allowed.pattern[1:-2]}"
    return None


def parse_uri_pattern(text: str) -> str:
    """Check a URI pattern (an exact URI, or a prefix ending in ``*``) and return it.

    Raises ValueError naming the problem: the fixed part must itself be in normal form."""
    if "*" in text[:-1]:
        raise ValueError(f"invalid URI pattern {text!r}: '*' may only end the pattern")
    authority = text.partition("://")[2]
    if text.endswith("*") and "/" not in authority and authority != "*":
        # spiffe://prod.internal* would match spiffe://prod.internal.evil/...: a prefix ends
        # in the path, or is the whole authority (spiffe://*, any ID of that scheme).
        raise ValueError(f"invalid URI pattern {text!r}: '*' inside the authority; write "
                         f"{text[:-1]}/* for IDs below it")
    # A prefix is checked as the shortest URI it can match: the prefix plus one character.
    problem = uri_problem(text[:-1] + "x" if text.endswith("*") else text)
    if problem:
        raise ValueError(f"invalid URI pattern {text!r}: {problem}")
    return text


def uri_matches(pattern: str, value: str) -> bool:
    """Does the URI ``value`` match ``pattern`` (exact, or a prefix ending in ``*``)?

    Only a URI in normal form ever matches (see :func:`uri_problem`); a prefix must be
    followed by at least one character."""
    if uri_problem(value) is not None:
        return False
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return value.startswith(prefix) and len(value) > len(prefix)
    return value == pattern
