"""A CA home whose provisioner asks for CRLs, and what the tests do with its certificates."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509

from trustyard.ca.authority import Authority, Issued
from trustyard.ca.home import InitOptions, init_home

from ..support import PASSWORD, new_csr


def crl_home(home: Path, db_url: str | None = None, crl: dict[str, Any] | None = None,
             url: str | None = None) -> Path:
    """A new CA in ``home`` whose provisioner has ``crl = true``, with ``[crl]`` settings ``crl``."""
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "localhost", "127.0.0.1/32"),
                                          **({"database_url": db_url} if db_url else {})))
    doc = tomllib.loads((home / "trustyard.toml").read_text())
    for prov in doc["provisioners"]:
        prov["crl"] = True
    doc["crl"] = crl or {}
    if url:
        doc["server"]["url"] = url
    (home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    return home


def issue(authority: Authority, *names: str) -> tuple[Issued, Any]:
    """A certificate for ``names`` through the token pipeline, and its key."""
    key, csr = new_csr(*names)
    prov = next(iter(authority.provisioners))
    token = authority.mint_token(prov, names[0], list(names))
    return authority.issue_for_token(csr, token), key


def cdp_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return points[0].full_name[0].value  # type: ignore[index]
