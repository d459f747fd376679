"""``report_to``: a service tells the CA which trust bundle its contexts have loaded.

Optional. A daemon thread checks in with the CA (``POST /v1/checkin``, as ``trustyard agent``
does) every ``interval`` (+-10%), authenticated by a proof signed with the key of the
certificate the first context presents, as party kind ``service``. The report carries the
SHA-256 of the ``ca.crt`` the contexts loaded (``ReloadingContext.bundle_sha256``), so
``trustyard fleet`` shows whether the running process (not only the files on disk) trusts the
CA's current bundle. On ``refresh-bundle`` the contexts are reloaded from their files; on
``retry-after N`` the next check-in waits N seconds. Failures are logged and retried at the next
interval; they never touch the service's connections.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import __version__
from ..x509.keys import load_private_key_pem
from .context import ReloadingContext

log = logging.getLogger("trustyard.tls")

INSTANCE_FILE = "service-instance"


class Reporter:
    """The background check-in of :func:`report_to`; ``stop()`` ends it."""

    def __init__(self, ca_url: str, contexts: tuple[ReloadingContext, ...], root: str | Path,
                 interval: timedelta, instance: str | None, timeout: float) -> None:
        if not contexts or contexts[0].files.cert is None or contexts[0].files.key is None:
            raise ValueError("report_to needs a context that presents a certificate (its key signs the check-in)")
        from ..client import CAClient

        self.contexts = contexts
        self.files = contexts[0].files
        self.interval = interval
        self.instance = instance or _instance_for(Path(self.files.cert).parent)  # type: ignore[arg-type]
        self.client = CAClient(ca_url, verify=str(root), timeout=timeout)
        self.rng = random.Random()
        self.last_answer: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trustyard-report", daemon=True)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def checkin(self) -> float:
        """One check-in; the seconds until the next one."""
        wait = self.interval.total_seconds() * (1 + self.rng.uniform(-0.1, 0.1))
        try:
            answer = self.client.checkin(self._proof())
        except Exception as exc:  # the service goes on whatever happens here
            self.failures += 1
            self.last_error = getattr(exc, "detail", None) or str(exc)
            log.warning("trustyard.tls: check-in with the CA failed: %s", self.last_error)
            return wait
        self.failures, self.last_error, self.last_answer = 0, None, answer
        for directive in answer.get("directives") or []:
            name = directive.get("name") if isinstance(directive, dict) else None
            if name == "refresh-bundle":
                for ctx in self.contexts:
                    ctx.reload()
            elif name == "retry-after" and isinstance(directive.get("seconds"), (int, float)):
                wait = max(wait, float(directive["seconds"]))
        return wait

    def _proof(self) -> str:
        from cryptography import x509

        from ..ca import proofs

        chain = x509.load_pem_x509_certificates(Path(self.files.cert).read_bytes())  # type: ignore[arg-type]
        key = load_private_key_pem(Path(self.files.key).read_bytes())  # type: ignore[arg-type]
        loaded = self.contexts[0]
        sha = loaded.bundle_sha256
        report = {"instance": self.instance, "kind": "service", "bundle_sha256": sha,
                  "bundle_version": _version_for(Path(self.files.cert).parent, sha),  # type: ignore[arg-type]
                  "failures": self.failures, "last_error": self.last_error, "agent_version": __version__,
                  "interval_seconds": max(1, round(self.interval.total_seconds()))}
        return proofs.make(key, chain[:1], proofs.CHECKIN, lifetime=timedelta(minutes=1), report=report)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.checkin())


def report_to(ca_url: str, *contexts: ReloadingContext, root: str | Path, interval: timedelta = timedelta(seconds=60),
              instance: str | None = None, timeout: float = 10.0) -> Reporter:
    """Start checking in with the CA at ``ca_url`` (verified with the trust bundle ``root``) for
    ``contexts`` (from :func:`server_context` / :func:`client_context`); returns the running
    :class:`Reporter`. ``instance`` tells replicas apart (default: an id kept in the certificate's
    directory, ``service-instance``)."""
    return Reporter(ca_url, contexts, root, interval, instance, timeout).start()


def _instance_for(directory: Path) -> str:
    from ..files import kept_id

    return kept_id(directory / INSTANCE_FILE)


def _version_for(directory: Path, sha: str | None) -> int | None:
    """The bundle's version from ``bundle.json`` when it names the bundle the contexts loaded."""
    try:
        doc = json.loads((directory / "bundle.json").read_text())
    except (OSError, ValueError):
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and doc.get("sha256") == sha:
        return version
    return None
