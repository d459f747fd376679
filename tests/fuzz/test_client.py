"""What the CLI and the renewal agent read back from the CA (``trustyard.client``).

Between them and the CA there may be a load balancer or a proxy answering with its own pages,
or a CA of another version. Every answer is a result or a ``TrustyardError`` (``CAUnavailable``
for what is worth retrying): the agent's loop catches exactly those, so anything else would
stop it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.client import CAClient
from trustyard.errors import TrustyardError

from .strategies import budget, json_values, replaced_values

ISSUED = {"serial": "0a", "not_before": "2026-01-01T00:00:00+00:00", "not_after": "2026-01-02T00:00:00+00:00",
          "certificate": "-----BEGIN CERTIFICATE-----\n", "chain": "", "roots": ""}
PROBLEM = {"type": "urn:trustyard:error:badToken", "title": "Unauthorized", "status": 401, "detail": "no"}

bodies = st.one_of(
    replaced_values(ISSUED).map(lambda d: json.dumps(d).encode()),
    replaced_values(PROBLEM).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"<html>502 Bad Gateway</html>", b"", b"null", b"[]", b'"text"', b"{"]),
    st.binary(max_size=60),
)


ANSWER: dict[str, Any] = {}


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(ANSWER["status"], content=ANSWER["body"], headers={"content-type": ANSWER["type"]})


CLIENT = CAClient.__new__(CAClient)  # one client, no TLS context: the transport answers in-process
CLIENT.url = "https://ca.invalid"
CLIENT.http = httpx.Client(base_url=CLIENT.url, transport=httpx.MockTransport(_answer))


@budget(250)
@given(st.sampled_from([200, 201, 304, 400, 401, 403, 404, 409, 429, 500, 502, 503]), bodies,
       st.sampled_from(["application/json", "application/problem+json", "text/html", ""]))
@example(200, b"<html>ok</html>", "text/html")
@example(201, b"[]", "application/json")
@example(201, json.dumps({**ISSUED, "serial": 5}).encode(), "application/json")
@example(403, b"[1, 2]", "application/problem+json")
@example(400, b'"just a string"', "application/problem+json")
def test_every_ca_answer_is_a_result_or_a_trustyard_error(status: int, body: bytes, content_type: str) -> None:
    ANSWER.update(status=status, body=body, type=content_type)
    client = CLIENT
    calls: list[Any] = [lambda: client.sign(b"csr", "token"), lambda: client.renew(b"csr", "proof"),
                        lambda: client.roots_if_changed('"etag"'), lambda: client.revoke("0a"),
                        lambda: client.list("admin")]
    for call in calls:
        try:
            call()
        except TrustyardError as exc:
            assert exc.detail is not None
