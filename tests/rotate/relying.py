"""Relying parties that make requests continuously, each from its own agent-written trust
files, counting successes and keeping every failure's text: Python ``httpx`` with
``trustyard.tls.client_context``, curl with ``ca.crt``, Node.js re-reading ``ca.crt`` per
request, and a Java client that loads the PKCS#12 truststore once per JVM (restarted between
batches, as a JVM reads its truststore once)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx

from trustyard.testing import need
from trustyard.tls import client_context

NODE_CLIENT = r"""
const https = require('https'), fs = require('fs');
const [caFile, url] = process.argv.slice(2);
function again() { setTimeout(one, 50); }
function one() {
  let ca;
  try { ca = fs.readFileSync(caFile); } catch (e) { console.log('fail read ' + e.message); return again(); }
  const req = https.get(url, {ca, agent: false, timeout: 10000}, res => {
    res.resume();
    res.on('end', () => { console.log(res.statusCode === 200 ? 'ok' : 'fail status ' + res.statusCode); again(); });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', e => { console.log('fail ' + (e.code || '') + ' ' + e.message); again(); });
}
one();
"""

JAVA_CLIENT = r"""
import java.io.InputStream;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.KeyStore;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class TrustClient {
    public static void main(String[] args) throws Exception {
        char[] password = new String(Files.readAllBytes(Paths.get(args[1]))).trim().toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(Paths.get(args[0]))) { store.load(in, password); }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(store);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, tmf.getTrustManagers(), null);
        int n = Integer.parseInt(args[3]);
        for (int i = 0; i < n; i++) {
            try {
                HttpsURLConnection c = (HttpsURLConnection) new URL(args[2]).openConnection();
                c.setSSLSocketFactory(tls.getSocketFactory());
                c.setConnectTimeout(10000);
                c.setReadTimeout(10000);
                int code = c.getResponseCode();
                try (InputStream in = c.getInputStream()) { in.readAllBytes(); }
                c.disconnect();
                System.out.println(code == 200 ? "ok" : "fail status " + code);
            } catch (Exception e) {
                System.out.println("fail " + e);
            }
            System.out.flush();
            Thread.sleep(50);
        }
    }
}
"""


class Tally:
    """Requests that succeeded, and the text of every one that failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def record(self, line: str) -> None:
        with self.lock:
            if line == "ok":
                self.ok += 1
            else:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {line}")

    def __repr__(self) -> str:
        return f"{self.name}: {self.ok} ok, {len(self.failures)} failed {self.failures[:5]}"


class Loop:
    """A thread repeating ``once`` until stopped."""

    def __init__(self, name: str) -> None:
        self.tally = Tally(name)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Loop:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.once()
            except Exception as exc:  # a failure of the harness is a failure too, never silent
                self.tally.record(f"harness {exc!r}")
            self.stopping.wait(0.05)

    def once(self) -> None:
        raise NotImplementedError


class HttpxLoop(Loop):
    """A fresh connection per request with the agent's directory as ``client_context``
    (presenting its client certificate; a changed ``ca.crt`` is trusted at the next handshake)."""

    def __init__(self, url: str, cert_dir: Path) -> None:
        super().__init__("httpx")
        self.url, self.ctx = url, client_context(cert_dir)

    def once(self) -> None:
        try:
            with httpx.Client(verify=self.ctx, timeout=10) as client:
                response = client.get(self.url)
            self.tally.record("ok" if response.status_code == 200 else f"status {response.status_code}")
        except httpx.HTTPError as exc:
            self.tally.record(repr(exc))


class CurlLoop(Loop):
    def __init__(self, url: str, cafile: Path) -> None:
        super().__init__("curl")
        self.url, self.cafile, self.curl = url, cafile, need("curl", package="curl")

    def once(self) -> None:
        done = subprocess.run([self.curl, "-sS", "--cacert", str(self.cafile), "-o", "/dev/null", "-w",
                               "%{http_code}", self.url], capture_output=True, text=True, timeout=30)
        self.tally.record("ok" if done.returncode == 0 and done.stdout == "200"
                          else f"exit {done.returncode} {done.stdout} {done.stderr.strip()}")


class NodeLoop(Loop):
    """One Node.js process requesting in a loop; a thread reads its verdicts."""

    def __init__(self, url: str, cafile: Path, workdir: Path) -> None:
        super().__init__("node")
        script = workdir / "client.js"
        script.write_text(NODE_CLIENT)
        self.process = subprocess.Popen([need("node", package="nodejs"), str(script), str(cafile), url],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def _run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tally.record(line.strip())
        if not self.stopping.is_set():
            self.tally.record(f"node exited {self.process.wait()}")

    def stop(self) -> None:
        self.stopping.set()
        self.process.terminate()
        self.process.wait(10)
        self.thread.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def compile_java(workdir: Path) -> Path:
    source = workdir / "TrustClient.java"
    source.write_text(JAVA_CLIENT)
    done = subprocess.run([need("javac", package="default-jdk-headless"), "-d", str(workdir), str(source)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return workdir


class JavaLoop(Loop):
    """Batches of ``batch`` requests, each batch a new JVM that loads the truststore at start."""

    def __init__(self, url: str, truststore: Path, password_file: Path, classes: Path, batch: int = 15) -> None:
        super().__init__("java")
        self.args = [need("java", package="default-jdk-headless"), "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                     "-Dhttp.keepAlive=false", "-cp", str(classes), "TrustClient", str(truststore),
                     str(password_file), url, str(batch)]
        self.batches = 0

    def once(self) -> None:
        done = subprocess.run(self.args, capture_output=True, text=True, timeout=120)
        for line in done.stdout.splitlines():
            self.tally.record(line.strip())
        if done.returncode != 0:
            self.tally.record(f"java exited {done.returncode}: {done.stderr.strip()[-500:]}")
        self.batches += 1
