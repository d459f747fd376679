"""``doctor``: probe an endpoint and name the first failing layer, with evidence.

Layers are checked in the order a client meets them: network, protocol, client_auth
(the server refuses us), then the three checks on what the server sent: trust (a path
to an anchor), identity (the name we asked for), validity (every certificate's window,
or the local clock). When every check here passes, a real verifying handshake with
Python's ``ssl`` configured the same way confirms it, so ``ok`` means a client would
succeed, not merely that our checks found nothing.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from ..environments import Environments
from ..errors import BadRequest
from ..units import format_time
from ..x509.chain import check_validity
from ..x509.summary import summarize
from ..x509.verify import Usage, verify
from .explain import describe, explain
from .probe import ProbeResult, is_ip, looks_like_tls, probe, sniff_plaintext

CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)


@dataclass
class Verdict:
    target: str
    ok: bool
    layer: str | None = None
    code: str | None = None
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    inspect: list[str] = field(default_factory=list)
    fix: str = ""
    chain: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "layer": self.layer, "code": self.code,
                "summary": self.summary, "evidence": self.evidence, "inspect": self.inspect, "fix": self.fix,
                "chain": self.chain}


def parse_target(target: str) -> tuple[str, int]:
    """``host:port``, ``[::1]:8443`` or an https URL (port 443 by default)."""
    text = target.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("https", "tls") or not parts.hostname:
        raise BadRequest(f"invalid target {target!r}: write HOST:PORT or https://HOST[:PORT]/")
    try:
        port = parts.port or 443
    except ValueError:
        raise BadRequest(f"invalid port in {target!r}") from None
    return parts.hostname, port


def load_anchors(ca_files: Sequence[str]) -> tuple[list[x509.Certificate], list[str]]:
    paths = list(ca_files)
    if not paths:
        defaults = ssl.get_default_verify_paths()
        paths = [p for p in (defaults.cafile, defaults.openssl_cafile) if p and Path(p).is_file()][:1]
    anchors: list[x509.Certificate] = []
    for p in paths:
        try:
            with warnings.catch_warnings():  # system bundles hold legacy roots (negative serials)
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                anchors += x509.load_pem_x509_certificates(Path(p).read_bytes())
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot read trust bundle {p}: {exc}") from None
    return anchors, paths


def _verdict(target: str, code: str, summary: str, chain: list[dict[str, Any]], **evidence: Any) -> Verdict:
    info = describe(code)
    inspect = [i.format(**evidence) if "{" in i else i for i in info.inspect]
    try:
        fix = info.fix.format(**evidence) if "{" in info.fix else info.fix
    except (KeyError, IndexError):
        fix = info.fix
    return Verdict(target, False, info.layer, code, summary, evidence, inspect, fix, chain)


def diagnose(
    target: str, *, ca_files: Sequence[str] = (), name: str | None = None, cert_file: str | None = None,
    key_file: str | None = None, timeout: float = 5.0, now: datetime | None = None,
    environments: Environments | None = None,
) -> Verdict:
    host, port = parse_target(target)
    expected = name or host
    anchors, bundle_paths = load_anchors(ca_files)
    bundle = ", ".join(bundle_paths) or "(none)"
    result = probe(host, port, sni=None if is_ip(expected) else expected, timeout=timeout, cert_file=cert_file,
                   key_file=key_file, http_request=True)
    now = now or datetime.now(UTC)
    chain = [_evidence(c, now) for c in result.chain]
    ev = {"bundle": bundle, "name": expected, "host": host, "port": port}

    if result.network_error:
        code = {"unreachable": "refused"}.get(result.network_error, result.network_error)
        return _verdict(target, code, f"cannot connect to {host}:{port}: {result.network_detail}", chain,
                        detail=result.network_detail, **ev)
    if result.tls_error:
        if result.tls_stage == "handshake" and not result.chain:
            answer = sniff_plaintext(host, port, timeout=min(timeout, 2.0))
            if answer and not looks_like_tls(answer):
                return _verdict(target, "not_tls", f"the port speaks plain text, not TLS; it answered "
                                f"{answer[:40]!r}", chain, answer=answer[:200].decode("latin-1"), **ev)
        return _tls_failure(target, result, chain, ev, timeout)
    if not result.chain:
        return _verdict(target, "handshake_failure", "the server sent no certificate", chain, **ev)

    offline = classify_chain(result.chain, anchors, name=expected, now=now, server_now=result.server_date,
                             target=target, bundle=bundle, host=host, port=port, environments=environments)
    if offline is not None:
        return offline
    leaf = result.chain[0]
    ev.update(leaf_subject=leaf.subject.rfc4514_string(), leaf_issuer=leaf.issuer.rfc4514_string())
    return _confirm(target, host, port, expected, bundle_paths, cert_file, key_file, timeout, chain, ev, result)


def classify_chain(
    served: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], *, name: str | None,
    usage: Usage = "server", now: datetime | None = None, server_now: datetime | None = None,
    max_depth: int | None = None, target: str = "(offline)", bundle: str = "(given)", host: str = "",
    port: int = 0, crls: Sequence[x509.CertificateRevocationList] = (), environments: Environments | None = None,
) -> Verdict | None:
    """Doctor's offline layers: the verdict on a served chain, or None when every layer passes.

    The one verifier (``x509.verify``) judges; this names its layer (trust, identity,
    validity) with the evidence, and tells a wrong local clock from an expired
    certificate when the server's clock is known.
    """
    now = now or datetime.now(UTC)
    chain = [_evidence(c, now) for c in served]
    ev: dict[str, Any] = {"bundle": bundle, "name": name, "host": host, "port": port}
    if not served:
        return _verdict(target, "handshake_failure", "no certificate to judge", chain, **ev)
    leaf = served[0]
    verdict = verify(leaf, served[1:], anchors, usage=usage, name=name, at=now, max_depth=max_depth, crls=crls)
    if verdict.ok:
        return None
    problem = verdict.first
    assert problem is not None
    ev.update(leaf_subject=_text(leaf.subject), leaf_issuer=_text(leaf.issuer), method=verdict.method)
    if problem.layer == "validity":
        window = check_validity(verdict.path, now)
        if window is not None:
            ev.update(certificate=_text(window.cert.subject), index=window.index,
                      not_before=format_time(window.cert.not_valid_before_utc),
                      not_after=format_time(window.cert.not_valid_after_utc))
        if server_now is not None and abs(server_now - now) > CLOCK_SKEW_TOLERANCE and verify(
                leaf, served[1:], anchors, usage=usage, name=name, at=server_now, max_depth=max_depth,
                crls=crls).ok:
            skew = now - server_now
            return _verdict(target, "clock_skew", f"the local clock is {_signed(skew)} off the server's "
                            f"({format_time(server_now)}); by the server's clock the chain is valid", chain,
                            local_time=format_time(now), server_time=format_time(server_now), **ev)
    if problem.layer == "identity":
        ev["sans"] = chain[0]["sans"]
    other = environments.lead_to(served, at_hand=anchors) if environments and problem.layer == "trust" else None
    if other is not None:
        assert environments is not None
        ev.update(environment=environments.current or "this environment", chain_environment=other)
        return _verdict(target, "wrong_environment", environments.explain(other), chain, **ev)
    return _verdict(target, problem.code, problem.detail, chain, needed_issuer=verdict.needed_issuer, **ev)


def _text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "(unprintable name)"


def _signed(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{abs(seconds)}s {'ahead of' if seconds > 0 else 'behind'}"


def _tls_failure(target: str, result: ProbeResult, chain: list[dict[str, Any]], ev: dict[str, Any],
                 timeout: float) -> Verdict:
    text = result.tls_error or ""
    found = explain(text)
    code = found.code if found.layer in ("protocol", "client_auth") else None
    alert_rejection = found.code in ("client_cert_rejected", "client_cert_required") or "alert" in text.lower()
    if result.cert_requested and (alert_rejection or code is None or code == "handshake_failure"):
        code = "client_cert_rejected" if result.client_cert_sent else "client_cert_required"
    elif code is None or (code.startswith("client_cert") and not result.cert_requested and
                          result.tls_stage == "handshake"):
        code = "handshake_failure"
    summary = f"TLS {result.tls_stage.replace('_', ' ') if result.tls_stage else ''} failed: {text}"
    extra: dict[str, Any] = {}
    if code in ("handshake_failure", "no_shared_protocol") and result.tls_stage == "handshake" \
            and not result.chain and not result.cert_requested:
        # A bare handshake_failure alert also means "no cipher suite in common": a client
        # that offers everything tells it apart, and names what the server does speak.
        wide = probe(result.host, result.port, sni=result.sni, timeout=timeout, permissive=True)
        if wide.handshake_ok and wide.protocol:
            code = "no_shared_protocol"
            extra = {"server_protocol": wide.protocol, "server_cipher": wide.cipher, **_client_offer()}
            summary = (f"no TLS version or cipher suite in common: the server agrees only to {wide.protocol} "
                       f"with {wide.cipher}; {summary}")
            chain = chain or [_evidence(c, datetime.now(UTC)) for c in wide.chain]
    return _verdict(target, code, summary, chain, tls_error=text, cert_requested=result.cert_requested,
                    client_cert_sent=result.client_cert_sent, **extra, **ev)


def _client_offer(ctx: ssl.SSLContext | None = None) -> dict[str, Any]:
    """What a client configured like Python's default offers."""
    ctx = ctx or ssl.create_default_context()
    return {"client_min_version": _version_name(ctx.minimum_version),
            "client_ciphers": [c["name"] for c in ctx.get_ciphers()]}


def _version_name(v: ssl.TLSVersion) -> str:
    return {ssl.TLSVersion.TLSv1: "TLSv1", ssl.TLSVersion.TLSv1_1: "TLSv1.1", ssl.TLSVersion.TLSv1_2: "TLSv1.2",
            ssl.TLSVersion.TLSv1_3: "TLSv1.3"}.get(v, "TLSv1")  # MINIMUM_SUPPORTED


_VERSION_RANK = {"SSLv3": 0, "TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


def _unshared(protocol: str | None, cipher: str | None, ctx: ssl.SSLContext) -> str | None:
    """Why the version and cipher the probe negotiated are out of reach for ``ctx``, if they are."""
    if protocol is None or cipher is None:
        return None
    minimum = _version_name(ctx.minimum_version)
    if _VERSION_RANK.get(protocol, 4) < _VERSION_RANK[minimum]:
        return f"the server speaks {protocol}; this client requires {minimum} or later"
    if protocol != "TLSv1.3" and cipher not in {c["name"] for c in ctx.get_ciphers()}:
        return f"the server picks {cipher} ({protocol}), a cipher suite this client does not offer"
    return None


def _confirm(target: str, host: str, port: int, expected: str, bundle_paths: list[str], cert_file: str | None,
             key_file: str | None, timeout: float, chain: list[dict[str, Any]], ev: dict[str, Any],
             probed: ProbeResult) -> Verdict:
    """A real verifying handshake, configured like the client being diagnosed."""
    ctx = ssl.create_default_context(cafile=bundle_paths[0] if len(bundle_paths) == 1 else None)
    for extra in bundle_paths[1:]:
        ctx.load_verify_locations(extra)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    try:
        with (socket.create_connection((host, port), timeout=timeout) as raw,
              ctx.wrap_socket(raw, server_hostname=expected) as tls):
            tls.sendall(f"HEAD / HTTP/1.1\r\nHost: {expected}\r\nConnection: close\r\n\r\n".encode())
            tls.settimeout(min(timeout, 1.0))
            with contextlib.suppress(TimeoutError):
                tls.recv(1024)
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        found = explain(str(exc))
        code = found.code or "handshake_failure"
        # our probe got through where this client did not: the difference is what it offers
        why = _unshared(probed.protocol, probed.cipher, ctx) if code == "handshake_failure" else None
        if why:
            return _verdict(target, "no_shared_protocol", f"a verifying client fails: {exc}: {why}", chain,
                            tls_error=str(exc), server_protocol=probed.protocol, server_cipher=probed.cipher,
                            **_client_offer(ctx), **ev)
        return _verdict(target, code, f"a verifying client fails: {exc}", chain, tls_error=str(exc), **ev)
    summary = f"OK: chain trusted by {ev['bundle']}, {expected} matches, all certificates valid"
    return Verdict(target, True, None, None, summary, ev, [], "", chain)


def _evidence(cert: x509.Certificate, now: datetime) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # a zero or negative serial is evidence too
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            s = summarize(cert, now)
    except Exception as exc:
        return {"subject": "(unparsable)", "issuer": "", "sans": [], "not_before": "", "not_after": "",
                "seconds_left": None, "self_signed": None, "is_ca": None, "fingerprint_sha256": "",
                "error": f"{type(exc).__name__}: {exc}"}
    return {k: s[k] for k in ("subject", "issuer", "sans", "not_before", "not_after", "seconds_left",
                              "self_signed", "is_ca", "fingerprint_sha256")}


def render_text(v: Verdict) -> str:
    lines = [f"{v.target}: {'OK' if v.ok else f'FAIL  layer={v.layer}  code={v.code}'}", f"  {v.summary}"]
    if v.chain:
        lines.append("  chain served:")
        for i, c in enumerate(v.chain):
            lines.append(f"    [{i}] subject={c['subject'] or '(empty)'}  issuer={c['issuer']}")
            lines.append(f"        sans={', '.join(c['sans']) or '(none)'}  "
                         f"valid {c['not_before']} .. {c['not_after']}")
    if v.inspect:
        lines.append("  inspect:")
        lines += [f"    - {i}" for i in v.inspect]
    if v.fix:
        lines.append(f"  fix: {v.fix}")
    return "\n".join(lines)
