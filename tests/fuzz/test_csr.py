"""Certificate signing requests (``x509.csr``).

A CSR is attacker-controlled: ``parse_csr`` returns a ``ParsedCSR`` or raises ``CSRError``
(a 400), whatever the bytes. Two kinds of input: real CSRs of every key type with bytes
flipped, cut and inserted (most fail the DER or the signature), and well-signed CSRs that
ask for strange things (names cryptography would refuse to build, odd subjects, CA:TRUE,
unknown extensions), which get past the signature into the name extraction.
"""

from __future__ import annotations

import ipaddress
import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from trustyard.x509.csr import CSRError, ParsedCSR, parse_csr
from trustyard.x509.keys import KeyType, generate_private_key, signature_hash
from trustyard.x509.names import normalize_dns

from .strategies import budget, bytes_from, pem_wrapped

KEYS = {t: generate_private_key(t) for t in (KeyType.EC_P256, KeyType.EC_P384, KeyType.ED25519, KeyType.RSA_2048)}


def _csr(key, names: list[x509.GeneralName], subject: x509.Name | None = None,  # type: ignore[no-untyped-def]
         extensions: list[tuple[x509.ExtensionType, bool]] = ()) -> x509.CertificateSigningRequest:  # type: ignore[assignment]
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, signature_hash(key))


SEEDS = [_csr(k, [x509.DNSName("a.internal"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                  x509.UniformResourceIdentifier("spiffe://prod.internal/a")]).public_bytes(Encoding.DER)
         for k in KEYS.values()]


def _only_csr_error(data: bytes | str) -> ParsedCSR | None:
    try:
        return parse_csr(data)
    except CSRError as exc:
        assert str(exc) and exc.code
        return None


def _check_request(request: ParsedCSR | None) -> None:
    if request is None:
        return
    for name in request.names:
        assert isinstance(name, (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier))
        if isinstance(name, x509.DNSName):
            assert normalize_dns(name.value) == name.value


@budget(300)
@given(st.one_of(bytes_from(*SEEDS), *[pem_wrapped("CERTIFICATE REQUEST", s) for s in SEEDS]))
def test_mutated_csrs_parse_or_raise_csr_error(data: bytes) -> None:
    _check_request(_only_csr_error(data))


@budget(100)
@given(st.text(max_size=200))
def test_csr_text_parses_or_raises_csr_error(text: str) -> None:
    _only_csr_error(text)
    _only_csr_error("-----BEGIN CERTIFICATE REQUEST-----\n" + text + "\n-----END CERTIFICATE REQUEST-----\n")


_raw_text = st.text(max_size=40) | st.sampled_from(["a..internal", "*.internal", "-a.internal", "A.INTERNAL.",
                                                    "é.internal", "a b", "", "*", "xn--", "a\x00.internal"])
raw_names = st.one_of(
    _raw_text.map(x509.DNSName._init_without_validation),
    _raw_text.map(x509.UniformResourceIdentifier._init_without_validation),
    _raw_text.map(x509.RFC822Name._init_without_validation),
    st.ip_addresses().map(x509.IPAddress),
    st.ip_addresses(v=4).map(lambda a: x509.IPAddress(ipaddress.ip_network(f"{a}/32"))),
    st.just(x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))),
    st.just(x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x03a@b")),
    st.just(x509.DirectoryName(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))),
)


def _attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute:
    with warnings.catch_warnings():  # a CN of 0 or 300 characters: cryptography warns, a hostile client does not care
        warnings.simplefilter("ignore", UserWarning)
        return x509.NameAttribute(oid, value, _validate=False)


subjects = st.lists(st.builds(_attribute,
                              st.sampled_from([x509.NameOID.COMMON_NAME, x509.NameOID.ORGANIZATION_NAME,
                                               x509.NameOID.SERIAL_NUMBER]),
                              _raw_text | st.text(min_size=60, max_size=300)), max_size=3).map(x509.Name)
extensions = st.lists(st.one_of(
    st.tuples(st.builds(x509.BasicConstraints, st.booleans(), st.none()), st.booleans()),
    st.tuples(st.builds(lambda v: x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), v),
                        st.binary(max_size=20)), st.booleans()),
    st.tuples(st.just(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CODE_SIGNING])), st.booleans()),
), max_size=3, unique_by=lambda e: type(e[0]))


@budget(200)
@given(st.sampled_from(list(KEYS)), st.lists(raw_names, max_size=5), subjects, extensions)
def test_signed_csrs_with_strange_requests_parse_or_raise_csr_error(key_type: KeyType, names, subject, exts) -> None:  # type: ignore[no-untyped-def]
    try:
        csr = _csr(KEYS[key_type], names, subject, exts)
    except ValueError:
        return  # cryptography itself refuses to encode it: nothing an attacker could send either
    for data in (csr.public_bytes(Encoding.DER), csr.public_bytes(Encoding.PEM)):
        _check_request(_only_csr_error(data))
