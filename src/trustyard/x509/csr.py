"""Parse and check certificate signing requests without trusting them.

A CSR is attacker-controlled input: any exception from parsing becomes ``CSRError``
(a 400), never an uncaught error. Only the public key and the requested names are
taken from it; no extension is ever copied into a certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import Code
from .keys import KeyType, PublicKey, describe_key, key_type_of
from .names import Name, common_names, normalize_dns, parse_name

MAX_CSR_BYTES = 16 * 1024


class CSRError(ValueError):
    """The CSR is malformed, badly signed or asks for something never granted."""

    def __init__(self, detail: str, code: str = Code.BAD_CSR) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class ParsedCSR:
    public_key: PublicKey
    key_type: KeyType | None
    key_description: str
    names: tuple[Name, ...]
    """SANs and a DNS-like CN, parsed; empty when the CSR names nothing."""
    asks_for_ca: bool
    der: bytes


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if len(raw) > MAX_CSR_BYTES:
        raise CSRError(f"CSR is {len(raw)} bytes; the limit is {MAX_CSR_BYTES}")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(raw)
        return x509.load_der_x509_csr(raw)
    except Exception as exc:  # cryptography raises several types on hostile input
        raise CSRError(f"cannot parse CSR: {_short(exc)}") from None


KeyCheck = Callable[[KeyType | None, str], None]
"""Called with a CSR's key type and description before its signature is verified; raises to refuse."""


def check_csr(csr: x509.CertificateSigningRequest, accept_key: KeyCheck | None = None) -> ParsedCSR:
    """Check the requester's key, then verify the self-signature and extract what it asks for.

    The key comes first: ``accept_key`` (the provisioner's key-type rule) may refuse it, and a
    key of a type trustyard never issues for (RSA-8192 or 16384, P-521, DSA) is refused with
    ``unsupportedKey``, both before any signature is checked.
    """
    try:
        public_key = csr.public_key()
    except Exception as exc:
        raise CSRError(f"malformed CSR public key: {_short(exc)}") from None
    key_type = key_type_of(public_key)  # type: ignore[arg-type]
    description = describe_key(public_key)
    if accept_key is not None:
        accept_key(key_type, description)
    if key_type is None:
        supported = ", ".join(k.value for k in KeyType)
        raise CSRError(f"the CSR's key is {description}: trustyard issues only for {supported}", Code.UNSUPPORTED_KEY)
    try:
        if not csr.is_signature_valid:
            raise CSRError("CSR signature does not verify: the requester does not hold the key", Code.BAD_SIGNATURE)
        extensions = csr.extensions
    except CSRError:
        raise
    except Exception as exc:
        raise CSRError(f"malformed CSR: {_short(exc)}") from None
    asks_for_ca = False
    names: list[Name] = []
    try:
        for ext in extensions:
            if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
                asks_for_ca = True
            elif isinstance(ext.value, x509.SubjectAlternativeName):
                for general in ext.value:
                    names.append(_name_from_csr(general))
        for cn in common_names(csr.subject):
            try:
                candidate: Name = parse_name(cn)
            except ValueError:
                continue  # a free-text CN is not a name request; it is simply dropped
            if candidate not in names:
                names.append(candidate)
    except CSRError:
        raise
    except Exception as exc:
        raise CSRError(f"malformed CSR extension: {_short(exc)}") from None
    return ParsedCSR(
        public_key=public_key,  # type: ignore[arg-type]
        key_type=key_type,
        key_description=description,
        names=tuple(dict.fromkeys(names)),
        asks_for_ca=asks_for_ca,
        der=csr.public_bytes(Encoding.DER),
    )


def parse_csr(data: bytes | str, accept_key: KeyCheck | None = None) -> ParsedCSR:
    return check_csr(load_csr(data), accept_key)


def _name_from_csr(general: x509.GeneralName) -> Name:
    if isinstance(general, x509.DNSName):
        try:
            return x509.DNSName(normalize_dns(general.value))
        except ValueError as exc:
            raise CSRError(str(exc), Code.BAD_NAME) from None
    if isinstance(general, (x509.IPAddress, x509.UniformResourceIdentifier)):
        return general
    raise CSRError(f"CSR asks for an unsupported name type {type(general).__name__}", Code.BAD_NAME)


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."

