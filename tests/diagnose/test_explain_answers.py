"""explain finishes its sentences: no unfilled placeholder in any answer,
curl's wording without its prefix, IP targets as ip_not_in_san, and every answer ending
with the `trustyard doctor HOST:PORT` command that confirms it."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from trustyard.cli import cli
from trustyard.diagnose.explain import corpus, explain
from trustyard.testing import need

from . import clients
from .scenarios import Live

MESSAGES = corpus().messages


def _answer(text: str) -> str:
    result = CliRunner().invoke(cli, ["explain", text])
    assert result.exception is None, result.output
    return result.output


def _variants(text: str) -> list[str]:
    """The message, and the message with each name/address/port it mentions cut out."""
    m = explain(text).to_json().get("mentioned") or {}
    out = [text]
    for value in (m.get("name"), m.get("host"), str(m["port"]) if m.get("port") else None, m.get("bundle")):
        if value and value in text:
            out.append(text.replace(value, ""))
    return out


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{m['client']}|{m['text'][:40]}")
def test_no_answer_leaves_a_placeholder_and_each_ends_with_doctor(message: dict) -> None:  # type: ignore[type-arg]
    for text in _variants(message["text"]):
        out = _answer(text)
        assert "{" not in out and "}" not in out, out
        last = out.rstrip("\n").splitlines()[-1]
        assert re.fullmatch(r"  (confirm|probe): trustyard doctor \S+:\S+( .*)?", last), out


def test_names_from_the_message_fill_the_sentences() -> None:
    out = _answer("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                  "Hostname mismatch, certificate is not valid for 'billing.internal'. (_ssl.c:1006)")
    assert "inspect: the name in the client's URL or config (billing.internal)" in out
    assert out.rstrip().endswith("confirm: trustyard doctor billing.internal:<port>")
    # nothing said about the bundle: the parenthetical goes, the sentence stays whole
    out = _answer("curl: (60) SSL certificate problem: self-signed certificate")
    assert "  inspect: the trust bundle the client uses\n" in out
    assert out.rstrip().endswith("confirm: trustyard doctor <host>:<port>")
    from trustyard.diagnose.explain import fill

    assert fill("listening on the address ({host}:{port})? (ss -ltnp)", {"host": "a"}) == \
        "listening on the address? (ss -ltnp)"
    assert fill("listening on the address ({host}:{port})?", {"host": "a", "port": "1"}) == \
        "listening on the address (a:1)?"


@pytest.mark.parametrize(("text", "confirm"), [
    ('Get "https://api.internal:8443/": tls: failed to verify certificate: x509: certificate signed by unknown '
     'authority', "trustyard doctor api.internal:8443"),
    ("requests.exceptions.SSLError: HTTPSConnectionPool(host='api.internal', port=443): Max retries exceeded "
     "with url: / (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
     "verify failed: unable to get local issuer certificate (_ssl.c:1006)')))", "trustyard doctor api.internal:443"),
    ("Error: connect ECONNREFUSED ::1:8443", "trustyard doctor [::1]:8443"),
    ("curl: (7) Failed to connect to 127.0.0.1 port 1: Couldn't connect to server", "trustyard doctor 127.0.0.1:1"),
    ("dial tcp 10.0.0.9:443: i/o timeout", "trustyard doctor 10.0.0.9:443"),
    ("curl: (60) SSL: no alternative certificate subject name matches target host name '::1'\nMore details here: "
     "https://curl.se/docs/sslcerts.html", "trustyard doctor [::1]:<port>"),
    ("curl: (77) error setting certificate file: x\n* CAfile: /etc/pki/orders-ca.pem\n"
     "curl: (60) SSL certificate problem: unable to get local issuer certificate",
     "trustyard doctor <host>:<port> --ca /etc/pki/orders-ca.pem"),
    ("Error: unable to verify the first certificate code=UNABLE_TO_VERIFY_LEAF_SIGNATURE",
     "trustyard doctor <host>:<port>"),
])
def test_answer_ends_with_the_doctor_command_for_the_address_in_the_message(text: str, confirm: str) -> None:
    assert _answer(text).rstrip("\n").splitlines()[-1] == f"  confirm: {confirm}"


@pytest.mark.parametrize("text", [
    "SSL certificate problem: self-signed certificate",
    "SSL certificate problem: unable to get local issuer certificate",
    "SSL: no alternative certificate subject name matches target host name 'api.internal'",
    "SSL certificate problem: certificate has expired",
    "Failed to connect to 127.0.0.1 port 1: Couldn't connect to server",
    "Could not resolve host: nosuchhost.invalid",
])
def test_curl_is_recognised_without_its_prefix(text: str) -> None:
    with_prefix = explain(f"curl: (60) {text}")
    out = _answer(text)
    assert f"code: {with_prefix.code}   client: curl" in out, out


@pytest.mark.parametrize("text", [
    "curl: (60) SSL: no alternative certificate subject name matches target ipv4 address '127.0.0.1'",
    "SSL: no alternative certificate subject name matches target ipv4 address '10.1.2.3'",
    "SSL: no alternative certificate subject name matches target ipv6 address '::1'",
    "curl: (60) SSL: no alternative certificate subject name matches target host name '127.0.0.1'",
    "curl: (60) SSL: certificate subject name 'service-a.internal' does not match target host name '10.0.0.7'",
    "verify error:num=64:IP address mismatch",
    "certificate verify failed: IP address mismatch, certificate is not valid for '::1'. (_ssl.c:1006)",
    "tls: failed to verify certificate: x509: certificate is valid for 10.0.0.7, not 127.0.0.1",
    "tls: failed to verify certificate: x509: certificate is valid for api.internal, not ::1",
    "x509: cannot validate certificate for ::1 because it doesn't contain any IP SANs",
    "Error: Hostname/IP does not match certificate's altnames: IP: ::1 is not in the cert's list:  "
    "code=ERR_TLS_CERT_ALTNAME_INVALID",
    "javax.net.ssl.SSLHandshakeException: No subject alternative names matching IP address ::1 found",
])
def test_a_name_mismatch_on_an_ip_target_is_ip_not_in_san(text: str) -> None:
    out = _answer(text)
    assert "code: ip_not_in_san" in out, out
    assert "hostname_mismatch" not in out


def test_a_name_mismatch_on_a_dns_name_stays_hostname_mismatch() -> None:
    out = _answer("SSL: no alternative certificate subject name matches target host name 'api.internal'")
    assert "code: hostname_mismatch" in out and "ip_not_in_san" not in out


def test_real_clients_on_an_ip_target_say_ip_not_in_san(live_servers: dict[str, Live]) -> None:
    need("curl")
    live = live_servers["ip_without_ip_san"]
    for text in (clients.curl(live), clients.python(live)):
        assert text
        out = _answer(text)
        assert "code: ip_not_in_san" in out, out
        assert "  confirm: trustyard doctor 127.0.0.1:" in out, out
