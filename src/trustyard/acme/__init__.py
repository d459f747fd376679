"""RFC 8555 (ACME) protocol logic, free of any web framework.

    jws          flattened-JWS parsing and verification, JWK thumbprints, EAB
    nonces       single-use anti-replay nonces kept in the database (valid across workers and replicas)
    problems     ``AcmeError``: urn:ietf:params:acme:error:* problems that are also exceptions
    model        accounts, orders, authorizations, challenges as data, and their JSON
    service      the protocol steps (``AcmeService``): one method per resource
    challenges   key authorizations and what http-01 / dns-01 / tls-alpn-01 expect
    guard        which validation targets may be contacted (SSRF guard)
    validation   the validation authority: probes run as bounded tasks on the event loop, outside the request
    ari          ACME Renewal Information (RFC 9773): certificate ids and suggested windows

The web layer (``trustyard.api.acme_routes``) turns HTTP into ``AcmeRequest`` values and
``AcmeResponse`` values back into HTTP; nothing here imports it.
"""

from .problems import AcmeError
from .service import AcmeRequest, AcmeResponse, AcmeService

__all__ = ["AcmeError", "AcmeRequest", "AcmeResponse", "AcmeService"]
