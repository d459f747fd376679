"""Every x509-limbo case through the one verifier and through doctor's offline layers.

0 crashes; no false accept or false reject except the cases listed below, each with the
reason written beside it. pyca/cryptography's own harness departs from the suite on 47 of
these 208 cases (its skipped features and cases, the CLIENT cases and non-serverAuth
EKUs); the lists here are shorter than that.
"""

from __future__ import annotations

import pytest

from trustyard.diagnose.explain import LAYERS, corpus

from .limbo import LIMBO, cases, judge, run_cryptography, run_doctor, run_verifier, table

if not LIMBO.is_file():  # pragma: no cover - the suite lives beside the checkout
    pytest.skip(f"x509-limbo suite not found ({LIMBO})", allow_module_level=True)

CRYPTOGRAPHY_DEPARTURES = 47

ACCEPTED_DESPITE_FAILURE: dict[str, str] = {
    "rfc5280::aki::cross-signed-root-missing-aki":
        "pedantic-rfc5280: a trust anchor that is a cross-signed root is used without its AKI, as Go, "
        "webpki and cryptography do; cve::cve-2024-0567 expects success for that very shape",
    "rfc5280::nc::permitted-dns-match-noncritical":
        "rfc5280-incompatible-with-webpki: the Web PKI (and webpki::nc::permitted-dns-match-noncritical, "
        "expected SUCCESS) allows non-critical name constraints; we follow the Web PKI",
    "webpki::eku::root-has-eku":
        "pedantic-webpki-eku: a trust anchor carrying an EKU is accepted; CA/B forbids it for public roots, "
        "but roots in system bundles carry one and refusing them would break real chains (cryptography "
        "skips this feature too)",
}

_CN_RULE = "we refuse a host-like CN that is not one of the SANs (CA/B BR 7.1.4.3, the webpki::cn cases); " \
           "this case has CN=example.com beside other SANs and expects success, which the webpki::cn cases " \
           "contradict: both cannot hold"

REJECTED_DESPITE_SUCCESS: dict[str, str] = {
    "crl::issuer-no-keyusage-extension":
        "a CA without keyUsage is refused (Web PKI rule, enforced by cryptography too)",
    "pathlen::validation-ignores-pathlen-in-leaf":
        "a CA certificate as the peer is refused (CA/B Forum; cryptography and webpki too)",
    "rfc5280::ca-as-leaf": "a CA certificate as the peer is refused (CA/B Forum; cryptography and webpki too)",
    "pathlen::self-issued-certs-pathlen":
        "self-issued intermediates count toward pathLen, as in cryptography, Go and webpki",
    "pathlen::max-chain-depth-1-self-issued":
        "self-issued intermediates count toward the depth limit, as in cryptography, Go and webpki",
    "rfc5280::eku::ee-without-eku":
        "refuse by default: a peer must name the usage it is for (webpki::eku::ee-without-eku expects "
        "failure for the same certificate shape)",
    "rfc5280::nc::permitted-dn-match":
        "name-constraint-dn: directoryName constraints are not supported, so a chain carrying a critical one "
        "is refused rather than half-checked (cryptography skips this feature)",
    "rfc5280::nc::permitted-dns-match-more": _CN_RULE,
    "rfc5280::nc::permitted-ipv4-match": _CN_RULE,
    "rfc5280::nc::permitted-ipv6-match": _CN_RULE,
    "webpki::nc::nc-permits-dns-san-pattern": _CN_RULE,
    "webpki::san::exact-localhost-ip-san": _CN_RULE,
    "webpki::san::leftmost-wildcard-san": _CN_RULE,
}

IDS = [c["id"] for c in cases()]


def test_the_lists_are_shorter_than_cryptographys_departures() -> None:
    assert len(ACCEPTED_DESPITE_FAILURE) + len(REJECTED_DESPITE_SUCCESS) < CRYPTOGRAPHY_DEPARTURES
    assert set(ACCEPTED_DESPITE_FAILURE) <= set(IDS) and set(REJECTED_DESPITE_SUCCESS) <= set(IDS)
    assert len(cases()) == 208


@pytest.mark.parametrize("case", cases(), ids=IDS)
def test_verifier(case: dict) -> None:
    kind, out = judge(case, run_verifier)
    assert kind != "crash", out.detail
    if kind == "false_accept":
        assert case["id"] in ACCEPTED_DESPITE_FAILURE, case["description"]
    elif kind == "false_reject":
        assert case["id"] in REJECTED_DESPITE_SUCCESS, f"{out.code}: {out.detail}"
    else:
        assert case["id"] not in ACCEPTED_DESPITE_FAILURE and case["id"] not in REJECTED_DESPITE_SUCCESS, \
            "listed but agrees now: take it off the list"
    if out.accepted is False:
        assert out.layer in ("trust", "identity", "validity") and out.code and out.detail


@pytest.mark.parametrize("case", cases(), ids=IDS)
def test_doctor_offline_layers(case: dict) -> None:
    kind, out = judge(case, run_doctor)
    assert kind != "crash", out.detail
    verifier_kind, _ = judge(case, run_verifier)
    assert kind == verifier_kind  # one verifier: doctor cannot disagree with it
    if out.accepted is False:
        assert out.layer in LAYERS and out.code in corpus().codes
        assert corpus().codes[out.code].layer == out.layer


def test_table_for_the_closing_note(capsys: pytest.CaptureFixture[str]) -> None:
    text, results = table()
    print(text)
    ours = results["trustyard verifier"]
    assert not ours["crash"] and not results["trustyard doctor"]["crash"]
    assert len(ours["false_accept"]) < len(results["cryptography (plain)"]["false_accept"])
    # plain cryptography, driven like its own harness, is the baseline the table compares with
    assert judge(cases()[0], run_cryptography)[0] in ("agree", "false_accept", "false_reject", "crash")
