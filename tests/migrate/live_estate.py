"""The end-to-end estate: the demo's (``trustyard.migrate.demo``: Python services and clients,
a PEM bundle, a PKCS#12 truststore, a Secret, a ``verify=False`` client) with ledger.internal
served by nginx, a Node.js service (payments.internal) and a Java client trusting it through a
JKS truststore made by keytool; and :class:`Running`, which starts every piece as its own
process, reloads a service the way its operator would, and reads the clients' logs."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trustyard.migrate import demo
from trustyard.migrate.demo import Client, Estate, Service
from trustyard.testing import free_port, need

from ..nginx import nginx_conf, start_nginx, stop_nginx

TRUST_PASSWORD = "changeit"  # keytool's default: what these truststores get in the wild

NODE_SERVICE = r"""
// An HTTPS service answering "ok"; SIGHUP swaps in tls.crt and tls.key for new connections.
const https = require('https'), fs = require('fs'), path = require('path');
const [dir, port, pidFile] = process.argv.slice(2);
const read = name => fs.readFileSync(path.join(dir, name));
const pair = () => ({key: read('tls.key'), cert: read('tls.crt')});
const server = https.createServer(pair(), (req, res) => {
  res.writeHead(200, {Connection: 'close'});
  res.end('ok\n');
});
process.on('SIGHUP', () => {
  try { server.setSecureContext(pair()); console.log('reloaded'); }
  catch (e) { console.log('reload failed, keeping the certificate loaded before: ' + e.message); }
});
server.listen(Number(port), '127.0.0.1', () => {
  fs.writeFileSync(pidFile, process.pid + '\n');
  console.log('serving');
});
"""

JAVA_CLIENT = r"""
import java.io.InputStream;
import java.io.PrintWriter;
import java.io.FileWriter;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.KeyStore;
import java.time.LocalTime;
import java.time.format.DateTimeFormatter;
import java.time.ZoneOffset;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/** Requests URL every 200 ms trusting the JKS truststore, read again for each request; logs each. */
public class Client {
    static final DateTimeFormatter CLOCK = DateTimeFormatter.ofPattern("HH:mm:ss.SSS");

    public static void main(String[] args) throws Exception {
        String store = args[0], url = args[1];
        char[] password = args[2].toCharArray();
        try (PrintWriter log = new PrintWriter(new FileWriter(args[3], true), true)) {
            while (true) {
                long start = System.nanoTime();
                String line;
                try {
                    KeyStore trust = KeyStore.getInstance("JKS");
                    try (InputStream in = Files.newInputStream(Paths.get(store))) { trust.load(in, password); }
                    String algorithm = TrustManagerFactory.getDefaultAlgorithm();
                    TrustManagerFactory tmf = TrustManagerFactory.getInstance(algorithm);
                    tmf.init(trust);
                    SSLContext tls = SSLContext.getInstance("TLS");
                    tls.init(null, tmf.getTrustManagers(), null);
                    HttpsURLConnection c = (HttpsURLConnection) new URL(url).openConnection();
                    c.setSSLSocketFactory(tls.getSocketFactory());
                    c.setConnectTimeout(5000);
                    c.setReadTimeout(5000);
                    int code = c.getResponseCode();
                    try (InputStream in = c.getInputStream()) { in.readAllBytes(); }
                    c.disconnect();
                    line = code == 200 ? "ok" : "FAIL status " + code;
                } catch (Exception e) {
                    line = ("FAIL " + e).replace('\n', ' ');
                }
                log.println(LocalTime.now(ZoneOffset.UTC).format(CLOCK) + " " + line);
                long left = 200 - (System.nanoTime() - start) / 1_000_000;
                if (left > 0) Thread.sleep(left);
            }
        }
    }
}
"""


def build(root: Path) -> Estate:
    """The demo estate on free ports, ledger on nginx, plus payments (Node.js) and its Java client."""
    services = [Service("billing", free_port()), Service("ledger", free_port(), runtime="nginx"),
                Service("payments", free_port(), runtime="node")]
    estate = demo.build(root, services)
    payments = estate.service("payments")
    java = estate.client_dir("java")
    java.mkdir(parents=True)
    (java / "Client.java").write_text(JAVA_CLIENT)
    (java / "hosts").write_text("".join(f"127.0.0.1 {s.host}\n" for s in estate.services))
    cert = estate.cert_dir("payments") / "tls.crt"
    done = subprocess.run([need("keytool"), "-importcert", "-noprompt", "-storetype", "JKS", "-keystore",
                           str(java / "truststore.jks"), "-storepass", TRUST_PASSWORD, "-alias", payments.host,
                           "-file", str(cert)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    estate.clients.append(Client("java", "payments", "java", "clients/java/truststore.jks"))
    (root / "bin" / "payments.js").write_text(NODE_SERVICE)
    estate.save()
    return estate


@dataclass
class Running:
    """Every service and client of an estate as its own process."""

    estate: Estate
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    nginx_dir: Path | None = None

    def start(self) -> Running:
        root = self.estate.root
        for s in self.estate.services:
            pid_file = self.estate.pid_file(s.name)
            if s.runtime == "python":
                self._spawn(s.name, [sys.executable, str(root / "bin/https_service.py"),
                                     str(self.estate.cert_dir(s.name)), str(s.port), str(pid_file)])
            elif s.runtime == "node":
                self._spawn(s.name, [need("node"), str(root / "bin/payments.js"), str(self.estate.cert_dir(s.name)),
                                     str(s.port), str(pid_file)])
            elif s.runtime == "nginx":
                self.nginx_dir = root / "run" / "nginx"
                self.nginx_dir.mkdir(parents=True)
                start_nginx(self.nginx_dir, nginx_conf(self.nginx_dir, s.port, self.estate.cert_dir(s.name),
                                                       server_name=s.host, worker_connections=128), need("nginx"))
        for s in self.estate.services:
            wait_for_port(s.port)
        for c in self.estate.clients:
            log = self.estate.log(c.name)
            if c.kind == "java":
                directory = self.estate.client_dir(c.name)
                port = self.estate.service(c.service).port
                self._spawn(c.name, [need("java"), "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx64m",
                                     f"-Djdk.net.hosts.file={directory / 'hosts'}", "-Dhttp.keepAlive=false",
                                     str(directory / "Client.java"), str(directory / "truststore.jks"),
                                     f"https://{c.service}.internal:{port}/", TRUST_PASSWORD, str(log)])
            else:
                self._spawn(c.name, [sys.executable, str(root / "bin/client_loop.py"),
                                     str(self.estate.client_dir(c.name) / "client.py"), str(log)])
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        out = (self.estate.root / "logs" / f"{name}.out").open("ab")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.processes[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                cwd=self.estate.root, start_new_session=True)
        out.close()

    def reload_command(self, service: str) -> str:
        """The shell command that makes ``service`` load its certificate files again."""
        if self.estate.service(service).runtime == "nginx":
            assert self.nginx_dir is not None
            return f"{need('nginx')} -p {self.nginx_dir} -c {self.nginx_dir / 'nginx.conf'} -s reload"
        return f"kill -HUP $(cat {self.estate.pid_file(service)})"

    def reload(self, service: str) -> None:
        """What its operator does after the certificate files changed: nginx -s reload, SIGHUP."""
        subprocess.run(["sh", "-c", self.reload_command(service)], check=True, capture_output=True, timeout=30)

    def wait_for_requests(self, n: int, timeout: float = 60) -> None:
        """Until every client has logged ``n`` requests more than now."""
        before = {c.name: len(self.lines(c.name)) for c in self.estate.clients}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(self.lines(name)) >= count + n for name, count in before.items()):
                return
            time.sleep(0.2)
        raise AssertionError(f"clients not requesting: {self.summary()}")

    def lines(self, client: str) -> list[str]:
        log = self.estate.log(client)
        return log.read_text().splitlines() if log.exists() else []

    def failures(self) -> dict[str, list[str]]:
        return {c.name: [line for line in self.lines(c.name) if line.partition(" ")[2] != "ok"]
                for c in self.estate.clients}

    def gaps(self, client: str) -> list[float]:
        """The times between two logged requests of ``client``, in seconds."""
        times = [dt.datetime.strptime(line.split(" ", 1)[0][:12], "%H:%M:%S.%f") for line in self.lines(client)]
        return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]

    def summary(self) -> str:
        return ", ".join(f"{c.name}: {len(self.lines(c.name))} requests, {len(self.failures()[c.name])} failed"
                         for c in self.estate.clients)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.nginx_dir is not None:
            stop_nginx(self.nginx_dir, need("nginx"))


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")
