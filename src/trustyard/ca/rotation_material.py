"""Rotation material in the CA home, and which material issues now.

    ca/rotations/N/intermediate.crt, intermediate.key   the new intermediate (key 0600, encrypted
                                                        like ca/intermediate.key)
    ca/rotations/N/root.crt, root.key, cross.crt        a root rotation: the new root, and the new
                                                        root's certificate signed by the old root
    ca/rotations/N/old-intermediate.crt, old-root.crt   what rotation N replaces

The issuing material is the newest rotation that reached ``active`` (its intermediate; with
the cross-certificate in the chain while a root rotation is not retired), else the home's own
``[ca] intermediate_cert``. ``load_authority`` and every worker's watcher resolve it the same
way, so a restart and a running worker agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import ConfigError
from ..files import write_atomic, write_exclusive
from ..store.rotations import RotationRow, RotationStore
from ..x509.keys import KeyType, generate_private_key, key_type_of, private_key_pem
from ..x509.profiles import intermediate_builder, root_builder, sign
from ..x509.summary import load_pem_bundle
from .authority import IssuingMaterial
from .config import Config
from .rotation import Made
from .signer import KeySigner

ISSUING = ("active", "retiring", "retired")


def _newest(rows: list[RotationRow], kind: str | None = None) -> RotationRow | None:
    for row in reversed(rows):
        if row.state in ISSUING and (kind is None or row.kind == kind):
            return row
    return None


class HomeMaterial:
    """``MaterialMaker`` on a CA home: keys encrypted with the home's password."""

    def __init__(self, config: Config, password: bytes | None, store: RotationStore) -> None:
        self.config, self.password, self.store = config, password, store

    def _load_cert(self, relative: str) -> x509.Certificate:
        try:
            return load_pem_bundle(self.config.path(relative).read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            raise ConfigError(f"cannot read the certificate {self.config.path(relative)}: {exc}") from None

    def issuing_paths(self) -> tuple[str, str, list[str], str | None]:
        """(intermediate certificate, its key, extra chain certificates, tag) in use now."""
        rows = self.store.all()
        newest = _newest(rows)
        if newest is None:
            return self.config.intermediate_cert, self.config.intermediate_key, [], None
        extra = [newest.paths["cross"]] if newest.kind == "root" and newest.state != "retired" else []
        return newest.paths["intermediate_cert"], newest.paths["intermediate_key"], extra, f"{newest.id}:{newest.state}"

    def root_paths(self) -> tuple[str, str]:
        newest = _newest(self.store.all(), "root")
        if newest is None:
            return self.config.root_cert, self.config.root_key
        return newest.paths["root_cert"], newest.paths["root_key"]

    def current(self) -> tuple[x509.Certificate, x509.Certificate]:
        inter, _key, _extra, _tag = self.issuing_paths()
        return self._load_cert(inter), self._load_cert(self.root_paths()[0])

    def issuing(self, roots: list[x509.Certificate]) -> IssuingMaterial:
        """The signer and chain the newest active rotation (or the home) issues with."""
        from .home import load_key

        inter_path, key_path, extra, tag = self.issuing_paths()
        inter = self._load_cert(inter_path)
        signer = KeySigner(inter, load_key(self.config, key_path, self.password))
        earlier = tuple((self._load_cert(row.paths["old_intermediate"]),) for row in self.store.all()
                        if row.state in ISSUING and "old_intermediate" in row.paths)
        return IssuingMaterial.of(signer, [inter, *(self._load_cert(p) for p in extra)], roots, tag or "", earlier)

    def earlier_signers(self) -> list[KeySigner]:
        """Signers of the intermediates rotations replaced whose keys are still in the home: the
        OCSP responder answers for the certificates they issued (``ca/ocsp.py``)."""
        from .home import load_key

        rows = self.store.all()
        pairs = [(self.config.intermediate_cert, self.config.intermediate_key),
                 *((r.paths["intermediate_cert"], r.paths["intermediate_key"]) for r in rows
                   if "intermediate_cert" in r.paths and "intermediate_key" in r.paths)]
        signers = []
        for row in rows:
            if row.state not in ISSUING or "old_intermediate" not in row.paths:
                continue
            old = self._load_cert(row.paths["old_intermediate"])
            for cert_path, key_path in pairs:
                if not self.config.path(key_path).exists() or self._load_cert(cert_path) != old:
                    continue
                signers.append(KeySigner(old, load_key(self.config, key_path, self.password)))
                break
        return signers

    def make(self, kind: str, rotation_id: int, now: datetime) -> Made:
        from .home import load_key

        old_inter, old_root = self.current()
        _root_cert_path, root_key_path = self.root_paths()
        root_key = load_key(self.config, root_key_path, self.password)
        base = f"ca/rotations/{rotation_id}"
        paths = {"intermediate_cert": f"{base}/intermediate.crt", "intermediate_key": f"{base}/intermediate.key",
                 "old_intermediate": f"{base}/old-intermediate.crt", "old_root": f"{base}/old-root.crt"}
        key_type = key_type_of(old_inter.public_key()) or KeyType.EC_P256  # type: ignore[arg-type]
        backdated = now.replace(microsecond=0)
        root, cross, signing_root, signing_key = None, None, old_root, root_key
        if kind == "root":
            new_root_key = generate_private_key(key_type_of(old_root.public_key()) or KeyType.EC_P256)  # type: ignore[arg-type]
            lifetime = old_root.not_valid_after_utc - old_root.not_valid_before_utc
            org = _attr(old_root.subject, x509.NameOID.ORGANIZATION_NAME)
            builder = root_builder(new_root_key.public_key(), _numbered(old_root, rotation_id), backdated,
                                   lifetime, organization=org)
            root = sign(builder, new_root_key)
            # The cross-certificate: the new root's name and key, vouched for by the old root.
            cross_builder = (x509.CertificateBuilder().subject_name(root.subject).issuer_name(old_root.subject)
                             .public_key(root.public_key()).serial_number(x509.random_serial_number())
                             .not_valid_before(backdated)
                             .not_valid_after(min(root.not_valid_after_utc, old_root.not_valid_after_utc)))
            for ext in root.extensions:
                cross_builder = cross_builder.add_extension(ext.value, critical=ext.critical)
            cross_builder = cross_builder.add_extension(_aki(old_root), critical=False)
            cross = sign(cross_builder, root_key)
            signing_root, signing_key = root, new_root_key
            paths.update(root_cert=f"{base}/root.crt", root_key=f"{base}/root.key", cross=f"{base}/cross.crt")
        lifetime = old_inter.not_valid_after_utc - old_inter.not_valid_before_utc
        new_key = generate_private_key(key_type)
        builder = intermediate_builder(new_key.public_key(), signing_root, _numbered(old_inter, rotation_id),
                                       backdated, lifetime,
                                       organization=_attr(old_inter.subject, x509.NameOID.ORGANIZATION_NAME))
        try:  # the same name constraints as the intermediate it replaces
            constraints = old_inter.extensions.get_extension_for_class(x509.NameConstraints)
            builder = builder.add_extension(constraints.value, critical=constraints.critical)
        except x509.ExtensionNotFound:
            pass
        inter = sign(builder, signing_key)
        pem = Encoding.PEM
        self.config.path(base).mkdir(parents=True, exist_ok=True)
        os.chmod(self.config.path(base), 0o700)
        write_exclusive(self.config.path(paths["intermediate_key"]), private_key_pem(new_key, self.password))
        write_atomic(self.config.path(paths["intermediate_cert"]), inter.public_bytes(pem))
        write_atomic(self.config.path(paths["old_intermediate"]), old_inter.public_bytes(pem))
        write_atomic(self.config.path(paths["old_root"]), old_root.public_bytes(pem))
        if root is not None and cross is not None:
            write_exclusive(self.config.path(paths["root_key"]), private_key_pem(new_root_key, self.password))
            write_atomic(self.config.path(paths["root_cert"]), root.public_bytes(pem))
            write_atomic(self.config.path(paths["cross"]), cross.public_bytes(pem))
        return Made(paths, inter, root, cross, old_inter, old_root)

    def load(self, paths: dict[str, str]) -> Made:
        def cert(key: str) -> x509.Certificate | None:
            return self._load_cert(paths[key]) if key in paths else None

        inter = cert("intermediate_cert")
        assert inter is not None
        return Made(paths, inter, cert("root_cert"), cert("cross"), cert("old_intermediate"), cert("old_root"))

    def discard(self, paths: dict[str, str]) -> None:
        for key in ("intermediate_key", "root_key"):
            if key in paths:
                Path(self.config.path(paths[key])).unlink(missing_ok=True)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _numbered(cert: x509.Certificate, rotation_id: int) -> str:
    """The common name of ``cert`` with this rotation's number: ``... Intermediate CA #3``."""
    cn = _attr(cert.subject, x509.NameOID.COMMON_NAME) or "trustyard CA"
    return f"{re.sub(r' #[0-9]+$', '', cn)} #{rotation_id}"


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def signed_by(issuer: x509.Certificate) -> Callable[[bytes], bool]:
    """A test of a leaf's DER: was it signed by ``issuer``? (for ledger rows from before the
    issuer column)."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    def check(der: bytes) -> bool:
        try:
            cert = x509.load_der_x509_certificate(der)
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except (ValueError, x509.ExtensionNotFound):
            return False
        return aki.key_identifier == ski

    return check
