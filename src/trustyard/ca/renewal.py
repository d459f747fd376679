"""``[renewal]`` of trustyard.toml: how the authority treats a renewal (``Authority.renew``).

    [renewal]
    allow_after_expiry = "1h"   # renew a certificate that expired less than this long ago ("0s": never)

Off by default, like step-ca's ``allowRenewalAfterExpiry``: a machine that was off while its
certificate expired (a weekend) renews with it on its return instead of needing a new bootstrap
token. A revoked certificate never renews; the proof must still be signed by its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sections import duration, section

MAX_AFTER_EXPIRY = timedelta(days=30)


@dataclass(frozen=True)
class RenewalConfig:
    allow_after_expiry: str = "0s"

    @property
    def after_expiry(self) -> timedelta:
        return duration("[renewal] allow_after_expiry", self.allow_after_expiry, allow_zero=True)


def load_renewal(path: Path, table: Any) -> RenewalConfig:
    config = RenewalConfig(**section(path, "renewal", table, RenewalConfig))
    if config.after_expiry > MAX_AFTER_EXPIRY:
        raise ConfigError(f"{path}: [renewal] allow_after_expiry = {config.allow_after_expiry!r}: at most "
                          "30d (a certificate expired longer ago bootstraps again with a new token)")
    return config
