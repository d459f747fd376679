"""The trust files an agent writes beside its certificate: ``ca.crt`` (always), the
truststores asked for with ``--trust-formats`` and ``bundle.json`` (the bundle's version and
digest). They go into the same generation as ``tls.crt`` and ``tls.key`` (``seams.FileOutput``).

    ca.crt            PEM, what trustyard.tls and most servers read
    truststore.p12    PKCS#12 truststore (Java -storetype PKCS12), password from --trust-password-file
    truststore.jks    Java KeyStore, the same password
    bundle.json       {"version": N, "sha256": "...", "formats": ["pem", ...]}

The truststores hold only public certificates and are written 0644 like ``ca.crt``; the
password protects their integrity, and is read once at start and never logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from ..client import TrustBundle
from ..errors import ConfigError
from ..x509 import truststore

FORMATS = ("pem", "p12", "jks")
FILES = {"pem": "ca.crt", "p12": "truststore.p12", "jks": "truststore.jks"}
STATE = "bundle.json"


@dataclass(frozen=True)
class TrustOutput:
    formats: tuple[str, ...] = ("pem",)
    password: bytes | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, formats: str | None, password_file: str | Path | None) -> TrustOutput:
        """From ``--trust-formats pem,p12,jks`` and ``--trust-password-file``: a ConfigError
        (exit 2) for an unknown format, or a truststore asked for without a readable password."""
        names = [f.strip().lower() for f in (formats or "pem").split(",") if f.strip()]
        unknown = [f for f in names if f not in FORMATS]
        if unknown or not names:
            raise ConfigError(f"--trust-formats: unknown format(s) {', '.join(map(repr, unknown)) or '(none)'}: "
                              f"give a comma-separated list of {', '.join(FORMATS)}")
        chosen = tuple(f for f in FORMATS if f == "pem" or f in names)  # ca.crt is always written
        password = None
        if any(f != "pem" for f in chosen):
            if not password_file:
                raise ConfigError("--trust-formats p12/jks need --trust-password-file FILE (the truststore password)")
            try:
                password = Path(password_file).read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read the truststore password file {password_file}: "
                                  f"{exc.strerror}") from None
            if not password:
                raise ConfigError(f"the truststore password file {password_file} is empty")
        return cls(chosen, password)

    def state(self, bundle: TrustBundle) -> bytes:
        """``bundle.json``: what a reader (the fleet check-in) reports as the bundle in place."""
        return (json.dumps({"version": bundle.version, "sha256": bundle.sha256, "formats": list(self.formats)})
                + "\n").encode()

    def files(self, bundle: TrustBundle) -> dict[str, bytes]:
        """Every trust file for ``bundle``, by name in the output directory."""
        out = {"ca.crt": bundle.pem.encode(), STATE: self.state(bundle)}
        if self.formats == ("pem",):
            return out
        certs = x509.load_pem_x509_certificates(bundle.pem.encode())
        assert self.password is not None
        if "p12" in self.formats:
            out[FILES["p12"]] = truststore.render_p12(certs, self.password)
        if "jks" in self.formats:
            out[FILES["jks"]] = truststore.render_jks(certs, self.password)
        return out

    def in_place(self, directory: Path, bundle: TrustBundle) -> bool:
        """Whether ``directory`` already holds ``bundle`` in every format asked for."""
        try:
            if (directory / "ca.crt").read_text() != bundle.pem:
                return False
            if (directory / STATE).read_bytes() != self.state(bundle):
                return False
        except (OSError, UnicodeDecodeError):
            return False
        return all((directory / FILES[f]).is_file() for f in self.formats)
