"""The OCSP side of bench/revoke: requests, wrk, the reference responder and answer checks.

- ``openssl ocsp -index`` is the reference responder. Its ``-port`` binds every interface (it
  takes no address), so it runs in a network namespace of its own with only loopback up
  (``unshare -n``); wrk and the answer check for it run in that namespace too (``nsenter``).
  It serves the same certificates from an OpenSSL CA ``index.txt`` (V and R lines with the
  ledger's revocation times and reasons) and signs with a delegated responder certificate
  issued by the same intermediate as trustyard's own (id-kp-OCSPSigning, ocsp-nocheck).
- One request file drives both: for every certificate of the mix, its DER request once as a
  POST body and once as a GET path (RFC 6960 A.1: the URL-encoded base64 after the responder
  URL: ``/ocsp/`` for trustyard, ``/`` for openssl).
- ``check`` asks for a sample over POST and GET and verifies each answer: successful, signed by
  a certificate the intermediate issued for OCSP signing, for the serial asked, with the
  ledger's status, revocation time and reason. ``python3 bench/revoke/ocsp_peer.py check``
  runs it inside the namespace for openssl.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

LUA = Path(__file__).with_name("ocsp.lua")


# -- requests ----------------------------------------------------------------------------------

def request_der(serial: int, issuer: x509.Certificate) -> bytes:
    from trustyard.x509.ocsp import issuer_keys

    _alg, name_hash, key_hash = issuer_keys(issuer)[0]  # SHA-1, what most clients send
    return (ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
            .build().public_bytes(Encoding.DER))


def get_path(prefix: str, der: bytes) -> str:
    return prefix + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


def write_requests(path: Path, serials: list[int], issuer: x509.Certificate, get_prefix: str) -> None:
    """The wrk request file: a POST and a GET line for every serial."""
    with path.open("w") as out:
        for serial in serials:
            der = request_der(serial, issuer)
            out.write(f"P {der.hex()}\nG {get_path(get_prefix, der)}\n")


# -- the reference responder -------------------------------------------------------------------

def _asn1_time(when: datetime) -> str:
    return when.strftime("%y%m%d%H%M%SZ")


def write_index(path: Path, revoked: list[tuple[int, datetime, str, datetime]],
                good: list[tuple[int, datetime]]) -> None:
    """An OpenSSL CA database (``openssl ca``'s index.txt) with these certificates."""
    def serial_hex(serial: int) -> str:
        text = format(serial, "X")
        return text if len(text) % 2 == 0 else "0" + text

    with path.open("w") as out:
        for serial, at, reason, not_after in revoked:
            out.write(f"R\t{_asn1_time(not_after)}\t{_asn1_time(at)},{reason}\t{serial_hex(serial)}\tunknown\t/CN=x\n")
        for serial, not_after in good:
            out.write(f"V\t{_asn1_time(not_after)}\t\t{serial_hex(serial)}\tunknown\t/CN=x\n")
    path.with_name(path.name + ".attr").write_text("unique_subject = no\n")


def responder_files(authority: object, directory: Path) -> tuple[Path, Path, Path]:
    """A delegated responder certificate and key for openssl, issued by ``authority``'s current
    intermediate exactly as trustyard issues its own; (rsigner, rkey, CA) paths."""
    from trustyard.files import write_private
    from trustyard.x509 import ocsp as proto
    from trustyard.x509.keys import KeyType, generate_private_key, private_key_pem

    material = authority.material  # type: ignore[attr-defined]
    key = generate_private_key(KeyType.EC_P256)
    now = datetime.now(UTC).replace(microsecond=0)
    cert = material.signer.sign(proto.responder_builder(key.public_key(), material.signer.certificate,
                                                        now - timedelta(minutes=1), timedelta(days=7)))
    rsigner, rkey, ca = directory / "rsigner.pem", directory / "rkey.pem", directory / "ca.pem"
    rsigner.write_bytes(cert.public_bytes(Encoding.PEM))
    write_private(rkey, private_key_pem(key))
    ca.write_bytes(material.signer.certificate.public_bytes(Encoding.PEM))
    return rsigner, rkey, ca


class Namespace:
    """A network namespace with loopback only, held by a sleeping process."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 100000"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if subprocess.run(self.wrap(["ip", "-br", "link", "show", "lo"]), capture_output=True,
                              text=True).stdout.find("UNKNOWN") >= 0:
                return
            time.sleep(0.05)
        raise RuntimeError("the network namespace's loopback did not come up")

    def wrap(self, command: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *command]

    def close(self) -> None:
        self.holder.terminate()
        self.holder.wait(5)


def start_openssl(ns: Namespace, index: Path, files: tuple[Path, Path, Path], port: int, processes: int,
                  log: Path, probe: bytes) -> subprocess.Popen[bytes]:
    """``openssl ocsp`` (``-multi`` when ``processes`` > 1) in ``ns``; returns once it answers
    ``probe`` (a DER request: an empty connection would hang it, see ocsp.lua)."""
    rsigner, rkey, ca = files
    command = ["openssl", "ocsp", "-index", str(index), "-port", str(port), "-rsigner", str(rsigner),
               "-rkey", str(rkey), "-CA", str(ca), "-nmin", "240"]
    if processes > 1:
        command += ["-multi", str(processes)]
    probe_file = log.with_suffix(".probe")
    probe_file.write_bytes(probe)
    with log.open("wb") as out:
        # not a session leader: -multi makes its own process group (setpgid), and stops its
        # children on SIGTERM
        process = subprocess.Popen(ns.wrap(command), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # it reads the whole index first
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"openssl ocsp exited {process.returncode}: {log.read_text()[-2000:]}")
        if "ACCEPT" in log.read_text(errors="replace"):
            answer = subprocess.run(ns.wrap(["curl", "-s", "-m", "60", "-o", "/dev/null", "-w", "%{http_code}",
                                             "--data-binary", f"@{probe_file}", f"http://127.0.0.1:{port}/"]),
                                    capture_output=True, text=True)
            if answer.stdout == "200":
                return process
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("openssl ocsp did not start")


def stop(process: subprocess.Popen[bytes], group: bool = True) -> None:
    """Stop ``process`` (and its process group, when it leads one) with SIGTERM, then SIGKILL."""
    if not group:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        # openssl ocsp -multi leads a process group of its own (setpgid), and its children
        # outlive it when they are stuck on an empty connection (see ocsp.lua): end them too.
        # Without -multi there is no group of that number.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 9)
        return
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(5)


# -- load -----------------------------------------------------------------------------------------

def wrk(url: str, requests: Path, ocsp_path: str, seconds: float, connections: int, threads: int,
        ns: Namespace | None = None, close: bool = False) -> dict[str, float]:
    """wrk with ocsp.lua; ``close``: a connection per request (``Connection: close``)."""
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(LUA), url]
    env = {**os.environ, "REQUESTS": str(requests), "OCSP_PATH": ocsp_path, "CONNECTION_CLOSE": "1" if close else "0"}
    result = subprocess.run(ns.wrap(command) if ns else command, capture_output=True, text=True, env=env,
                            timeout=seconds + 60)
    match = re.search(r"RESULT (.*)", result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
    figures = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


# -- checking answers ----------------------------------------------------------------------------

def check(url: str, get_prefix: str, post_path: str, issuer: x509.Certificate, sample: list[dict[str, str]],
          root: Path | None = None) -> dict[str, object]:
    """Ask for every certificate of ``sample`` over POST and GET; count the answers that are
    right (see the module's text) and describe the first wrong ones."""
    verify: object = False
    if root is not None:
        import ssl

        verify = ssl.create_default_context(cafile=str(root))
    ok, wrong = 0, []
    with httpx.Client(base_url=url, verify=verify, timeout=30) as client:  # type: ignore[arg-type]
        for cert in sample:
            der = request_der(int(cert["serial"], 16), issuer)
            for method in ("POST", "GET"):
                if method == "POST":
                    answer = client.post(post_path, content=der, headers={"content-type": "application/ocsp-request"})
                else:
                    answer = client.get(get_path(get_prefix, der))
                problem = _problem(answer, cert, issuer)
                if problem is None:
                    ok += 1
                elif len(wrong) < 5:
                    wrong.append(f"{method} {cert['serial']}: {problem}")
    return {"checked": 2 * len(sample), "ok": ok, "wrong": wrong}


def _problem(answer: httpx.Response, cert: dict[str, str], issuer: x509.Certificate) -> str | None:
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}"
    response = ocsp.load_der_ocsp_response(answer.content)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"status {response.response_status.name}"
    signer = next((c for c in response.certificates), None)
    if signer is None:
        return "no responder certificate in the answer"
    try:
        signer.verify_directly_issued_by(issuer)
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return "the responder certificate is not for OCSP signing"
        key = signer.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(response.signature, response.tbs_response_bytes,
                   ec.ECDSA(response.signature_hash_algorithm))  # type: ignore[arg-type]
    except Exception as exc:
        return f"signature: {exc!r}"
    if response.serial_number != int(cert["serial"], 16):
        return "another serial"
    status = response.certificate_status.name.lower()
    if status != cert["status"]:
        return f"{status}, the ledger says {cert['status']}"
    if status == "revoked":
        at = datetime.fromisoformat(cert["revoked_at"]).replace(tzinfo=UTC)
        if response.revocation_time_utc != at.replace(microsecond=0):
            return f"revoked at {response.revocation_time_utc}, the ledger says {at}"
        reason = response.revocation_reason.value if response.revocation_reason else "unspecified"
        if reason != cert["reason"]:  # the ledger's names are the ReasonFlags values
            return f"reason {reason}, the ledger says {cert['reason']}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="check OCSP answers against a sample (run by bench/revoke)")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--get-prefix", required=True)
    parser.add_argument("--post-path", required=True)
    parser.add_argument("--issuer", required=True, type=Path)
    parser.add_argument("--sample", required=True, type=Path)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    issuer = x509.load_pem_x509_certificate(args.issuer.read_bytes())
    print(json.dumps(check(args.url, args.get_prefix, args.post_path, issuer, json.loads(args.sample.read_text()),
                           args.root)))


if __name__ == "__main__":
    main()
