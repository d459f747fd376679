"""``[crl]`` and the CRL URL scheme: which shard a certificate belongs to and where its CRL is.

    [crl] shards = 16        a certificate's shard is its serial number mod shards (fixed once
                             certificates carry the URLs: ``serve`` refuses a change)
          period = "1h"      every shard is generated once per period, by one replica
          next_update = "24h"  nextUpdate - thisUpdate (more than period: a CRL never lapses
                             between two generations)
          delay = "60s"      a revocation reaches its shard's CRL within this

A shard's CRL is served at ``<[server] url>/crl/<issuer id>/<shard>.crl``, the issuer id being
the first 16 hex digits of the issuing intermediate's SHA-256 fingerprint; leaves of a
provisioner with ``crl = true`` carry that URL in their CRL Distribution Points. Light on
purpose (no SQL): the authority imports it; the generation job is ``ca/crl_job.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sections import duration, section

MAX_SHARDS = 4096


@dataclass(frozen=True)
class CrlConfig:
    shards: int = 16
    period: str = "1h"
    next_update: str = "24h"
    delay: str = "60s"

    def duration(self, key: str) -> timedelta:
        return duration(f"[crl] {key}", getattr(self, key))


def load_crl(path: Path, table: Any) -> CrlConfig:
    config = CrlConfig(**section(path, "crl", table, CrlConfig))
    if not 1 <= config.shards <= MAX_SHARDS:
        raise ConfigError(f"{path}: [crl] shards = {config.shards}: must be from 1 to {MAX_SHARDS}")
    if config.duration("next_update") <= config.duration("period"):
        raise ConfigError(f"{path}: [crl] next_update ({config.next_update}) must be longer than period "
                          f"({config.period}): a CRL must not lapse before the next one is generated")
    config.duration("delay")
    return config


@dataclass(frozen=True)
class CrlScheme:
    """Where the CRL of a certificate is: its shard and URL (pure)."""

    base_url: str  # [server] url, without a trailing slash
    shards: int

    @classmethod
    def of(cls, url: str, config: CrlConfig) -> CrlScheme:
        return cls(url.rstrip("/"), config.shards)

    def shard(self, serial: int) -> int:
        return serial % self.shards

    def url(self, issuer_sha256: str, shard: int) -> str:
        return f"{self.base_url}/crl/{issuer_sha256[:16]}/{shard}.crl"
