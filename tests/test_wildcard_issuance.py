"""Wildcard certificates only where a provisioner allows them, never for a
whole allowed zone, over the REST API (the ACME side is in tests/acme/test_identifier_policy.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority
from trustyard.errors import PolicyDenied

from .support import PASSWORD, new_csr


def set_wildcards(home: Path, provisioner: str, value: bool) -> None:
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    for entry in doc["provisioners"]:
        if entry["name"] == provisioner:
            entry["wildcards"] = value
    path.write_text(tomli_w.dumps(doc))


def test_rest_issues_a_wildcard_only_when_the_provisioner_allows_it(sqlite_home: Path) -> None:
    authority = load_authority(sqlite_home, PASSWORD, minting=True)  # allow *.internal, wildcards unset
    try:
        with pytest.raises(PolicyDenied) as info:
            authority.mint_token("default", "*.svc.internal", [])
        assert info.value.rule == "names_allowed" and "wildcards = true" in info.value.detail
    finally:
        authority.store.close()
    set_wildcards(sqlite_home, "default", True)
    authority = load_authority(sqlite_home, PASSWORD, minting=True)
    try:
        with pytest.raises(PolicyDenied):  # the whole allowed zone stays refused
            authority.mint_token("default", "*.internal", [])
        token = authority.mint_token("default", "*.svc.internal", [])
        _key, csr = new_csr("*.svc.internal")
        with TestClient(create_app(authority, load_config(sqlite_home)), raise_server_exceptions=False) as client:
            response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
        assert response.status_code == 201, response.text
        cert = x509.load_pem_x509_certificates(response.json()["certificate"].encode())[0]
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == ["*.svc.internal"]
    finally:
        authority.store.close()
