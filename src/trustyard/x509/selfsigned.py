"""Self-signed certificates: what trustyard replaces, made for tests and the migrate demo (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from .keys import KeyType, PrivateKey, generate_private_key, signature_hash
from .names import parse_name
from .profiles import new_serial


def self_signed_certificate(names: Sequence[str | x509.GeneralName], now: datetime, *, cn: str | None = None,
                            ttl: timedelta = timedelta(days=365), key: PrivateKey | None = None,
                            is_ca: bool = False, algorithm: hashes.HashAlgorithm | None = None,
                            ) -> tuple[x509.Certificate, PrivateKey]:
    """The certificate trustyard replaces: its own issuer, CN ``cn`` (default: the first name),
    valid from a day before ``now`` for ``ttl``; a new P-256 key unless ``key`` is given. Names
    are strings as a person types them ("*.a.internal", "10.0.0.7") or GeneralNames."""
    private = key or generate_private_key(KeyType.EC_P256)
    first = names[0] if names else None
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            cn or (first if isinstance(first, str) else "self"))])
    start = now - timedelta(days=1)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(private.public_key()).serial_number(new_serial())
               .not_valid_before(start).not_valid_after(start + ttl)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    sans: list[x509.GeneralName] = []
    for n in names:
        name = n if isinstance(n, x509.GeneralName) else parse_name(n)
        if name not in sans:
            sans.append(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(private, algorithm or signature_hash(private)), private  # type: ignore[arg-type]
