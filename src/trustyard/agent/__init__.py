"""The renewal agent: keeps certificates issued, renewed, written, reloaded and proven live.

- :mod:`.schedule` (pure): when to renew (share of lifetime, jitter, outage budget), how
  long to back off after a failure, and how worried to be.
- :mod:`.config`: what to manage, from flags or a TOML file (:class:`CertSpec`).
- :mod:`.seams`: the CA (:class:`HTTPBackend`), the files (:class:`FileOutput`) and time
  (:class:`SystemClock`, :class:`FakeClock`) behind narrow interfaces.
- :mod:`.actions`: the reload action and the live-endpoint probe.
- :mod:`.runner`: :class:`ManagedCert` (one certificate's state machine) and
  :class:`Agent` (the loop, the trust-bundle poll, ``--once``).
- :mod:`.metrics`: ``/healthz`` and ``/metrics`` on a local port.
"""

from .config import AgentConfig, CertSpec, ReloadAction
from .runner import EXIT_FAILED, EXIT_OK, EXIT_REBOOTSTRAP, Agent, ManagedCert
from .schedule import Backoff, Level, Plan, Schedule, Status, assess
from .seams import CABackend, Clock, FakeClock, FileOutput, HTTPBackend, Output, SystemClock

__all__ = [
    "EXIT_FAILED", "EXIT_OK", "EXIT_REBOOTSTRAP", "Agent", "AgentConfig", "Backoff", "CABackend", "CertSpec",
    "Clock", "FakeClock", "FileOutput", "HTTPBackend", "Level", "ManagedCert", "Output", "Plan",
    "ReloadAction", "Schedule", "Status", "SystemClock", "assess",
]
