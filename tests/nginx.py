"""nginx for the end-to-end tests: one configuration skeleton (a daemon writing its pid, log and
temp files under its run directory, one TLS ``server`` answering ``ok``) and starting and
stopping it with ``-p RUN_DIR -c RUN_DIR/nginx.conf``, so the agent can signal the pid file."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

_SKELETON = """
daemon on;
pid {dir}/nginx.pid;
error_log {dir}/error.log {error_level};
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {server_name};
        ssl_certificate {certs}/tls.crt;
        ssl_certificate_key {certs}/tls.key;
{server_extra}        location / {{ return 200 "ok\\n"; }}
    }}
{http_extra}}}
"""


def _indented(block: str, spaces: int) -> str:
    """``block`` without its common indentation, shifted right by ``spaces``, one line each."""
    block = textwrap.dedent(block).strip("\n")
    return textwrap.indent(block, " " * spaces) + "\n" if block.strip() else ""


def nginx_conf(directory: Path, port: int, certs: Path, *, server_name: str = "edge.internal",
               worker_connections: int = 64, error_level: str = "warn", server_extra: str = "",
               http_extra: str = "") -> str:
    """The configuration of an nginx running in ``directory`` that serves ``certs``/tls.crt on
    127.0.0.1:``port``; ``server_extra`` goes into that TLS server, ``http_extra`` into ``http``."""
    return _SKELETON.format(dir=directory, port=port, certs=certs, server_name=server_name,
                            worker_connections=worker_connections, error_level=error_level,
                            server_extra=_indented(server_extra, 8),
                            http_extra=_indented(http_extra, 4))


def start_nginx(run_dir: Path, conf: str, nginx: str = "nginx") -> Path:
    """Write ``conf`` to RUN_DIR/nginx.conf and start nginx on it (it daemonizes); its path."""
    path = run_dir / "nginx.conf"
    path.write_text(conf)
    subprocess.run([nginx, "-p", str(run_dir), "-c", str(path)], check=True, capture_output=True, timeout=30)
    return path


def stop_nginx(run_dir: Path, nginx: str = "nginx") -> None:
    """Ask the nginx started by :func:`start_nginx` in ``run_dir`` to quit, if it was configured."""
    path = run_dir / "nginx.conf"
    if path.exists():
        subprocess.run([nginx, "-p", str(run_dir), "-c", str(path), "-s", "quit"], capture_output=True, timeout=30)
