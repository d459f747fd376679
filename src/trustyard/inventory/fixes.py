"""For each finding, the trustyard commands that replace what is wrong: a ``fix:`` line a
person can follow (TOKEN, URL and DIR are the user's; NAME is filled in when the
certificate names a host)."""

from __future__ import annotations

from cryptography import x509

from .model import CertItem, Finding
from .roles import hostname_cn


def service_name(item: CertItem | None) -> str:
    """The name to issue for: the first DNS (else IP) SAN, else a hostname-like CN, else NAME."""
    if item is None:
        return "NAME"
    for kind in (x509.DNSName, x509.IPAddress):
        for san in item.sans:
            if isinstance(san, kind):
                return str(san.value)
    return hostname_cn(item) or "NAME"


def _issue(name: str) -> str:
    return f"trustyard token {name}; trustyard issue {name} --token TOKEN --ca-url URL --root root.crt --out DIR"


def fix_for(finding: Finding, item: CertItem | None) -> str:
    if finding.fix:  # a finding that brings its own (verification_disabled: per construct)
        return finding.fix
    return fix_named(finding, service_name(item))


def fix_named(finding: Finding, name: str) -> str:
    """``fix_for`` with the service name already known (a streamed scan keeps it, not the item)."""
    if finding.fix:
        return finding.fix
    code = finding.code
    if code == "key_unprotected":
        return f"chmod 600 {finding.locations[0]}, or replace it: {_issue(name)} (writes tls.key 0600)"
    if code == "leaf_in_trust_store":
        return ("trust the CA, not one certificate: trustyard roots --ca-url URL --fingerprint SHA256 "
                f"--out roots.pem, put roots.pem in these trust stores in place of {name}; {_issue(name)}")
    if code == "shared_cert":
        return f"one certificate per service: for each place, {_issue(name)}; then delete the copies"
    if code in ("shared_key", "cross_environment"):
        return f"a key per service and environment: in each place, {_issue(name)} (the key is made there)"
    if code == "key_mismatch":
        return f"{_issue(name)} writes tls.crt and its tls.key together"
    if code == "wrong_environment":
        return (f"a certificate from this environment's CA: {_issue(name)} with --ca-url of this environment's "
                "CA; never add the other environment's root to the trust bundle")
    if code in ("untrusted_chain", "missing_intermediate"):
        return f"{_issue(name)} writes the full chain to tls.crt and the root to ca.crt"
    if code in ("expired", "expiring"):
        return (f"{_issue(name)}; trustyard agent --name {name} --ca-url URL --root root.crt --out DIR "
                "keeps it renewed")
    # self_signed_leaf, no_san, weak_key, long_validity, not_yet_valid: a CA-issued certificate
    # with SANs, a strong key and a short lifetime replaces it
    return _issue(name)


__all__ = ["fix_for", "fix_named", "service_name"]
