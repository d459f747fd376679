"""Many TLS listeners on 127.0.0.1 in one asyncio process.

    python3 bench/scan/tls_farm.py DIR COUNT

Makes a root, an intermediate and COUNT P-256 leaves under DIR, listens on COUNT
ephemeral ports (one certificate each, served with its intermediate), prints the ports
as one JSON line on stdout, and serves until stdin closes. Each connection completes
the handshake, answers a request line with a short HTTP response, and closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certs(base: Path, count: int) -> tuple[Path, list[tuple[Path, Path]]]:
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=90)

    def cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
             ca: bool, san: str | None = None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            names = [x509.DNSName(san), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return b.sign(signer, hashes.SHA256())

    base.mkdir(parents=True, exist_ok=True)
    root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = cert("Farm Root", "Farm Root", root_key, root_key, True)
    inter = cert("Farm Intermediate", "Farm Root", inter_key, root_key, True)
    ca_file = base / "ca.crt"
    ca_file.write_bytes(root.public_bytes(Encoding.PEM))
    pairs = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = cert(f"ep{i}.bench.internal", "Farm Intermediate", key, inter_key, False, f"ep{i}.bench.internal")
        crt, kp = base / f"ep{i}.crt", base / f"ep{i}.key"
        crt.write_bytes(leaf.public_bytes(Encoding.PEM) + inter.public_bytes(Encoding.PEM))
        kp.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        pairs.append((crt, kp))
    return ca_file, pairs


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(reader.readline(), timeout=2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        await writer.drain()
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(base: Path, count: int) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # scanners hang up mid-handshake; that is fine
    _, pairs = make_certs(base, count)
    servers = []
    for crt, key in pairs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key))
        servers.append(await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=256,
                                                  ssl_handshake_timeout=10))
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"ports": ports}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
