"""Rolling back ``issued``: the certificate it issued is revoked (reason superseded) through the
authority's own revoke, so the ledger, the CRL, OCSP and the audit log all say so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..ca.config import Config
from . import journal


@dataclass
class Revoker:
    """What rolling back ``issued`` needs to revoke the certificate it issued: the CA home."""

    home: Path
    config: Config
    ca_password_file: str | None = None

    def __call__(self, cert_file: str, actor: str) -> str:
        """Revoke (reason superseded, through the authority's revoke, audited) the CA-issued
        certificate in ``cert_file``; a line saying what was done."""
        data = journal.current(cert_file)
        if data is None:
            return f"{cert_file} is gone: no certificate to revoke"
        return self.revoke_pem(data, actor, cert_file)

    def revoke_pem(self, pem: bytes, actor: str, where: str) -> str:
        """Revoke the CA-issued certificate in ``pem`` (found at ``where``, for the messages)."""
        from ..ca.home import load_authority, read_password
        from ..x509.summary import serial_text

        cert = x509.load_pem_x509_certificate(pem)
        serial = serial_text(cert.serial_number)
        password = read_password(self.ca_password_file, insecure_no_password=not self.config.encrypted_keys)
        authority = load_authority(self.home, password, config=self.config, migrate=False)
        try:
            record = authority.store.get(serial)
            if record is None or record.der != cert.public_bytes(Encoding.DER):
                return f"{where} holds serial {serial}, which this CA did not issue: not revoked"
            if record.status == "revoked":
                return f"serial {serial} was already revoked ({record.revocation_reason})"
            authority.revoke(serial, REVOKE_REASON, admin=True, actor=actor)
        finally:
            authority.store.close()
        return f"revoked serial {serial} (reason {REVOKE_REASON}): the certificate issued for the boundary"


REVOKE_REASON = "superseded"
