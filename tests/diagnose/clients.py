"""Real TLS clients pointed at a scenario; each returns its error text ('' on success)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

from .scenarios import Live

JAVA_CLIENT = """
import javax.net.ssl.*; import java.security.*; import java.security.cert.*; import java.io.*; import java.util.*;
public class TlsProbe {
  public static void main(String[] a) throws Exception {
    KeyStore ts = KeyStore.getInstance(KeyStore.getDefaultType()); ts.load(null, null);
    int i = 0;
    for (java.security.cert.Certificate c : CertificateFactory.getInstance("X.509")
           .generateCertificates(new FileInputStream(a[3]))) ts.setCertificateEntry("ca" + (i++), c);
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(ts);
    SSLContext ctx = SSLContext.getInstance("TLS"); ctx.init(null, tmf.getTrustManagers(), null);
    java.net.Socket raw = new java.net.Socket(a[0], Integer.parseInt(a[1]));
    try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(raw, a[2], Integer.parseInt(a[1]), true)) {
      SSLParameters p = s.getSSLParameters(); p.setEndpointIdentificationAlgorithm("HTTPS");
      if (Character.isLetter(a[2].charAt(0))) p.setServerNames(List.of(new SNIHostName(a[2])));
      s.setSSLParameters(p); s.startHandshake();
      s.getOutputStream().write("HEAD / HTTP/1.0\\r\\n\\r\\n".getBytes()); s.getInputStream().read();
    } catch (Exception e) { System.out.println(e); Throwable c = e.getCause(); while (c != null) { System.out.println("Caused by: " + c); c = c.getCause(); } }
  }
}
"""

NODE_CLIENT = """
const tls = require('tls'); const fs = require('fs');
const [host, port, name, ca, cert, key] = process.argv.slice(1);
const opts = {host, port: +port, ca: fs.readFileSync(ca), servername: /^[a-z]/i.test(name) ? name : undefined};
if (cert) { opts.cert = fs.readFileSync(cert); opts.key = fs.readFileSync(key); }
if (!/^[a-z]/i.test(name)) opts.checkServerIdentity = (h, c) => tls.checkServerIdentity(name, c);
const s = tls.connect(opts, () => { s.write('HEAD / HTTP/1.0\\r\\n\\r\\n'); });
s.on('data', () => { s.end(); }); s.on('error', e => { console.log(`Error: ${e.message} code=${e.code}`); process.exit(0); });
s.setTimeout(3000, () => { console.log('timeout'); process.exit(0); });
"""


def curl(live: Live) -> str:
    cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", "5", "--cacert", str(live.ca_file)]
    if live.client_cert:
        cmd += ["--cert", str(live.client_cert[0]), "--key", str(live.client_cert[1])]
    if live.host_name[0].isalpha():
        cmd += ["--resolve", f"{live.host_name}:{live.port}:127.0.0.1"]
    cmd.append(live.url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return out.stderr.strip().splitlines()[0] if out.returncode else ""


def python(live: Live, *, strict_cn: bool = True) -> str:
    ctx = ssl.create_default_context(cafile=str(live.ca_file))
    if strict_cn:
        ctx.hostname_checks_common_name = False  # as Go, rustls and browsers do
    if live.client_cert:
        ctx.load_cert_chain(str(live.client_cert[0]), str(live.client_cert[1]))
    try:
        with (socket.create_connection(("127.0.0.1", live.port), timeout=5) as raw,
              ctx.wrap_socket(raw, server_hostname=live.host_name) as tls):
            tls.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            tls.recv(64)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    return ""


def openssl(live: Live) -> str:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{live.port}", "-CAfile", str(live.ca_file),
           "-verify_return_error", "-brief", "-ign_eof"]  # wait for the server: TLS 1.3 alerts come late
    cmd += ["-verify_hostname", live.host_name] if live.host_name[0].isalpha() else ["-verify_ip", live.host_name]
    if live.host_name[0].isalpha():
        cmd += ["-servername", live.host_name]
    if live.client_cert:
        cmd += ["-cert", str(live.client_cert[0]), "-key", str(live.client_cert[1])]
    out = subprocess.run(cmd, input="HEAD / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=20)
    text = out.stderr + out.stdout
    # A server that closes without close_notify after answering is not a failure.
    lines = [ln for ln in text.splitlines() if ("error" in ln.lower() or "alert" in ln.lower())
             and "unexpected eof while reading" not in ln]
    return "\n".join(lines)


def node(live: Live) -> str:
    args = ["node", "-e", NODE_CLIENT, "127.0.0.1", str(live.port), live.host_name, str(live.ca_file)]
    if live.client_cert:
        args += [str(live.client_cert[0]), str(live.client_cert[1])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    return out.stdout.strip()


def compile_java(directory: Path) -> Path:
    src = directory / "TlsProbe.java"
    src.write_text(JAVA_CLIENT)
    subprocess.run(["javac", "-d", str(directory), str(src)], check=True, capture_output=True, timeout=120)
    return directory


def java(classes: Path, live: Live) -> str:
    out = subprocess.run(["java", "-cp", str(classes), "TlsProbe", "127.0.0.1", str(live.port), live.host_name,
                          str(live.ca_file)], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()
