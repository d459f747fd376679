"""RFC 8555 (ACME) protocol logic, free of any web framework.

    jws          flattened-JWS parsing and verification, JWK thumbprints, EAB
    nonces       single-use anti-replay nonces kept in the database (valid across workers and replicas)
    problems     ``AcmeError``: urn:ietf:params:acme:error:* problems that are also exceptions
    model        accounts, orders, authorizations, challenges as data, and their JSON
    envelope     ``AcmeRequest``/``AcmeResponse``; a POST's JWS, key, account and nonce -> the caller
    service      the protocol steps (``AcmeService``): one handler per resource, in a table
    challenges   key authorizations and what http-01 / dns-01 / tls-alpn-01 expect
    guard        which validation targets may be contacted (SSRF guard)
    validation   the validation authority: probes run as bounded tasks on the event loop, outside the request
    probes       what http-01, dns-01 and tls-alpn-01 check (``Checker``), and the DNS they ask
    http01       the small HTTP/1.1 client http-01 validation fetches with
    slots        fair shares of the validation slots between accounts
    ari          ACME Renewal Information (RFC 9773): certificate ids and suggested windows

The web layer (``trustyard.api.acme_routes``) turns HTTP into ``AcmeRequest`` values and
``AcmeResponse`` values back into HTTP; nothing here imports it.
"""

from .envelope import AcmeFailure, AcmeRequest, AcmeResponse
from .problems import AcmeError
from .service import AcmeService

__all__ = ["AcmeError", "AcmeFailure", "AcmeRequest", "AcmeResponse", "AcmeService"]
