"""Chain building by names, key identifiers and signatures, and the three checks a TLS
client makes on what a server sends: trust, identity (hostname), validity window.

pyca's verifier reports every failure as one opaque string and cannot tell an unknown
issuer from a missing intermediate, so these functions look at AKI/SKI, names and dates
themselves and return a *code* a diagnosis can name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ..units import format_time
from .names import common_names, sans_of
from .summary import fingerprint_sha256, is_ca, is_self_signed

MAX_DEPTH = 10


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def issued(parent: x509.Certificate, child: x509.Certificate) -> bool:
    """Did ``parent`` sign ``child``? Names and key ids first (cheap), then the signature."""
    if child.issuer != parent.subject:
        return False
    aki, ski = authority_key_id(child), subject_key_id(parent)
    if aki is not None and ski is not None and aki != ski:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except Exception:  # unsupported algorithm, bad signature, name mismatch: all mean "no"
        return False
    return True


def find_issuer(cert: x509.Certificate, pool: Iterable[x509.Certificate]) -> x509.Certificate | None:
    for candidate in pool:
        if candidate is not cert and issued(candidate, cert):
            return candidate
    return None


# Signature checks one path search may spend: a pathological bundle (100 intermediates with one
# subject and one key) must end in a refusal, not in an exponential walk.
SEARCH_BUDGET = 2000


def candidate_paths(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    max_depth: int = MAX_DEPTH,
    budget: int = SEARCH_BUDGET,
) -> Iterator[list[x509.Certificate]]:
    """Every path ``leaf -> intermediates... -> anchor`` linked by names, key ids and signatures.

    Depth first and backtracking: when several certificates could have issued the current
    one (a cross-signed intermediate, a renewed CA with the same subject), each is tried in
    turn, so a dead end on the first does not hide a good path through the second. A
    certificate appears at most once per path; at most ``max_depth`` intermediates.
    """
    anchor_fps = {fingerprint_sha256(a) for a in anchors}
    pool: list[x509.Certificate] = []
    seen: set[str] = set(anchor_fps)
    for cert in intermediates:
        fp = fingerprint_sha256(cert)
        if fp not in seen:
            seen.add(fp)
            pool.append(cert)
    memo: dict[tuple[str, str], bool] = {}
    spent = steps = 0

    def signed(parent: x509.Certificate, child: x509.Certificate) -> bool:
        nonlocal spent, steps
        steps += 1
        if steps > budget * 20:  # cached answers are cheap, but the walk over them is not
            raise _Exhausted
        if child.issuer != parent.subject:
            return False
        key = (fingerprint_sha256(parent), fingerprint_sha256(child))
        if key not in memo:
            spent += 1
            if spent > budget:
                raise _Exhausted
            memo[key] = issued(parent, child)
        return memo[key]

    def walk(path: list[x509.Certificate], used: set[str]) -> Iterator[list[x509.Certificate]]:
        current = path[-1]
        for anchor in anchors:
            if signed(anchor, current):
                yield [*path, anchor]
        if len(path) > max_depth:
            return
        for cert in pool:
            fp = fingerprint_sha256(cert)
            if fp not in used and signed(cert, current):
                yield from walk([*path, cert], used | {fp})

    if fingerprint_sha256(leaf) in anchor_fps:
        yield [leaf]
    try:
        yield from walk([leaf], {fingerprint_sha256(leaf)})
    except _Exhausted:
        return


class _Exhausted(Exception):
    pass


def is_leaf_self_signed(cert: x509.Certificate) -> bool:
    """Self-signed and used as an end entity: not a CA, or carrying names to be served under."""
    return is_self_signed(cert) and (not is_ca(cert) or bool(sans_of(cert)))


@dataclass
class ChainCheck:
    """The result of building a path from a served chain to a trust anchor.

    ``code`` is None when trusted, else one of ``self_signed_leaf``, ``unknown_issuer``,
    ``missing_intermediate``, ``root_in_chain_untrusted``.
    """

    path: list[x509.Certificate]
    code: str | None = None
    detail: str = ""
    needed_issuer: str | None = None
    anchor: x509.Certificate | None = None
    borrowed: list[x509.Certificate] = field(default_factory=list)  # intermediates not sent

    @property
    def trusted(self) -> bool:
        return self.code is None


def check_chain(
    served: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    known: Sequence[x509.Certificate] = (),
) -> ChainCheck:
    """Build a path from ``served[0]`` to one of ``anchors``.

    ``known`` are other certificates we have seen (an inventory, the bundle's
    intermediates): if the path only completes with one of them, the server did not
    send an intermediate it should have. A served chain that ends in a non-CA
    certificate not issued by an anchor is also a missing intermediate: the server sent
    its leaf alone.
    """
    if not served:
        raise ValueError("empty chain")
    leaf = served[0]
    found = next(candidate_paths(leaf, served[1:], anchors), None)
    if found is not None:
        return ChainCheck(path=found[:-1] or found, anchor=found[-1])
    sent = {fingerprint_sha256(c) for c in served}
    found = next(candidate_paths(leaf, [*served[1:], *known], anchors), None) if known else None
    if found is not None:
        borrowed: list[x509.Certificate] = [c for c in found[1:-1] if fingerprint_sha256(c) not in sent]
        needed = borrowed[0].subject.rfc4514_string()
        return ChainCheck(
            path=found[:-1], code="missing_intermediate", needed_issuer=needed, anchor=found[-1],
            borrowed=borrowed, detail=f"the server does not send the intermediate {needed}",
        )
    anchor_fps = {fingerprint_sha256(a) for a in anchors}
    path = [leaf]
    borrowed = []
    rest = list(served[1:])
    current = leaf
    for _ in range(MAX_DEPTH):
        anchor = find_issuer(current, anchors)
        if anchor is not None:
            if borrowed:
                needed = borrowed[0].subject.rfc4514_string()
                return ChainCheck(
                    path=path, code="missing_intermediate", needed_issuer=needed, anchor=anchor,
                    borrowed=borrowed, detail=f"the server does not send the intermediate {needed}",
                )
            return ChainCheck(path=path, anchor=anchor)
        if current is not leaf and fingerprint_sha256(current) in anchor_fps:
            return ChainCheck(path=path, anchor=current)
        parent = find_issuer(current, rest)
        if parent is None:
            parent = find_issuer(current, known)
            if parent is not None:
                borrowed.append(parent)
        if parent is None or parent in path:
            break
        path.append(parent)
        current = parent
    end = path[-1]
    if is_self_signed(end):
        if end is leaf:
            return ChainCheck(path=path, code="self_signed_leaf",
                              detail="the certificate is self-signed and not in the trust bundle")
        return ChainCheck(path=path, code="root_in_chain_untrusted",
                          detail=f"the chain ends in a root that is not trusted: {end.subject.rfc4514_string()}")
    needed = end.issuer.rfc4514_string()
    if not is_ca(end) or borrowed:
        return ChainCheck(path=path, code="missing_intermediate", needed_issuer=needed, borrowed=borrowed,
                          detail=f"no intermediate sent: the issuer {needed} is neither sent nor trusted")
    return ChainCheck(path=path, code="unknown_issuer", needed_issuer=needed,
                      detail=f"the issuer {needed} is not in the trust bundle")


def label(cert: x509.Certificate) -> str:
    """The subject, or the SANs when the subject is empty (as trustyard issues leaves)."""
    subject = cert.subject.rfc4514_string()
    if subject:
        return subject
    names = [str(getattr(n, "value", "")) for n in sans_of(cert)]
    return f"SAN={','.join(names)}" if names else "(empty subject)"


@dataclass(frozen=True)
class WindowProblem:
    code: str  # "expired" | "not_yet_valid"
    index: int  # position in the path, 0 = leaf
    cert: x509.Certificate
    detail: str


def check_validity(path: Sequence[x509.Certificate], now: datetime) -> WindowProblem | None:
    """The first certificate of the path outside its validity window at ``now``.

    Certificates carry whole seconds, so ``now`` is compared at that granularity.
    """
    now = now.replace(microsecond=0)
    for i, cert in enumerate(path):
        who = "leaf" if i == 0 else f"chain[{i}]"
        if now > cert.not_valid_after_utc:
            return WindowProblem("expired", i, cert,
                                 f"{who} {label(cert)} expired at "
                                 f"{format_time(cert.not_valid_after_utc)}")
        if now < cert.not_valid_before_utc:
            return WindowProblem("not_yet_valid", i, cert,
                                 f"{who} {label(cert)} is valid only from "
                                 f"{format_time(cert.not_valid_before_utc)}")
    return None


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        head, _, tail = host.partition(".")
        return bool(head) and tail == pattern[2:]
    return False


@dataclass(frozen=True)
class IdentityProblem:
    code: str  # hostname_mismatch | ip_not_in_san | cn_only | wildcard_mismatch
    detail: str


def check_hostname(cert: x509.Certificate, host: str) -> IdentityProblem | None:
    """RFC 6125 as browsers and modern TLS libraries apply it: SANs only, one-label wildcards."""
    sans = sans_of(cert)
    dns = [n.value for n in sans if isinstance(n, x509.DNSName)]
    ips = [n.value for n in sans if isinstance(n, x509.IPAddress)]
    names = dns + [str(i) for i in ips]
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if ip in ips:
            return None
        return IdentityProblem("ip_not_in_san", f"{ip} is not an IP address SAN of the certificate "
                               f"(SANs: {', '.join(names) or 'none'}); a DNS SAN or CN does not count")
    if any(_dns_match(p, host) for p in dns):
        return None
    if not dns and not ips:
        cns = common_names(cert.subject)
        return IdentityProblem("cn_only", f"the certificate has no subject alternative names; clients "
                               f"ignore its CN {', '.join(cns) or '(none)'}")
    wild = [p for p in dns if p.startswith("*.") and host.lower().endswith(p[1:].lower())]
    if wild:
        return IdentityProblem("wildcard_mismatch", f"{wild[0]} covers one label only, not {host}")
    return IdentityProblem("hostname_mismatch", f"{host} is not among the SANs: {', '.join(names)}")


def weakness(cert: x509.Certificate, key: CertificatePublicKeyTypes | None = None) -> list[str]:
    """Reasons a certificate's key or signature is too weak: RSA < 2048, EC < 256, SHA-1/MD5.
    ``key`` is the certificate's public key when the caller has it already."""
    reasons = []
    key = key if key is not None else cert.public_key()
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < 2048:
        reasons.append(f"{type(key).__name__[:3].upper()} key of {key.key_size} bits")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        reasons.append(f"EC key on {key.curve.name} ({key.curve.key_size} bits)")
    try:
        algo = cert.signature_hash_algorithm
    except Exception:  # unknown signature OID: not weak by our definition
        algo = None
    # a root's own signature is never checked, so SHA-1 there is harmless; on anything else it is not
    if algo is not None and algo.name in ("sha1", "md5") and not (is_self_signed(cert) and is_ca(cert)):
        reasons.append(f"{algo.name.upper()} signature")
    return reasons
