"""nginx staples trustyard's OCSP answer: the server certificate comes from a provisioner with
``ocsp = true``, nginx finds the responder in its AIA and ``openssl s_client -status`` sees the
stapled, verified response. nginx fetches OCSP over plain HTTP only, so the AIA URL
(``[server] ocsp_url``) names a plain-HTTP front (an nginx location proxying to the CA), the
deployment the README describes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from trustyard.testing import free_port, need

from ..nginx import nginx_conf, start_nginx, stop_nginx
from ..support import run_cli, start_server
from .helpers import ocsp_home

OCSP_FRONT = """
server {{
    listen 127.0.0.1:{ocsp_port};
    location /ocsp {{
        proxy_pass https://127.0.0.1:{ca_port};
        proxy_ssl_trusted_certificate {root};
        proxy_ssl_verify on;
        proxy_ssl_name localhost;  # the CA server certificate covers it (nginx checks host names only)
    }}
}}
"""


@pytest.mark.slow
def test_nginx_staples_a_good_response_from_trustyard(tmp_path: Path) -> None:
    nginx, openssl = need("nginx", package="nginx"), need("openssl")
    ca_port, tls_port, ocsp_port = free_port(), free_port(), free_port()
    home = ocsp_home(tmp_path / "ca", url=f"https://127.0.0.1:{ca_port}",
                     ocsp_url=f"http://127.0.0.1:{ocsp_port}/ocsp")
    server = start_server(home, workers=1, port=ca_port)
    run_dir, certs = tmp_path / "nginx", tmp_path / "edge"
    run_dir.mkdir()
    try:
        code, out, err = run_cli("issue", "edge.internal", "--home", str(home), "--out", str(certs), "--json")
        assert code == 0, err
        assert json.loads(out)["serial"]
        root = home / "ca" / "root.crt"
        (run_dir / "trusted.pem").write_bytes(root.read_bytes() + (home / "ca" / "intermediate.crt").read_bytes())
        conf = nginx_conf(run_dir, tls_port, certs, error_level="info",
                          server_extra=f"ssl_stapling on;\nssl_stapling_verify on;\n"
                                       f"ssl_trusted_certificate {run_dir}/trusted.pem;",
                          http_extra=OCSP_FRONT.format(ocsp_port=ocsp_port, ca_port=ca_port, root=root))
        start_nginx(run_dir, conf, nginx)
        seen = ""
        for _ in range(20):  # nginx staples lazily: the first handshakes go out without a response
            done = subprocess.run([openssl, "s_client", "-status", "-connect", f"127.0.0.1:{tls_port}",
                                   "-servername", "edge.internal", "-CAfile", str(root)],
                                  input="", capture_output=True, text=True, timeout=30)
            seen = done.stdout
            if "OCSP Response Status: successful" in seen:
                break
            time.sleep(0.5)
        assert "OCSP Response Status: successful" in seen, seen + (run_dir / "error.log").read_text()
        assert "Cert Status: good" in seen
        assert "Responder Id:" in seen and "OCSP Responder" in seen  # the delegated responder signed it
    finally:
        stop_nginx(run_dir, nginx)
        server.stop()
