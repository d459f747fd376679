"""The roots an agent trusts to replace its trust bundle: its anchors.

The agent records the roots it was bootstrapped with (the ``--root`` bundle that verified the
CA) as SHA-256 fingerprints in ``OUT/anchors.json``, once. A trust bundle fetched later
replaces ``ca.crt`` only when it contains at least one of those anchors: a CA (or whatever
answers at its URL) that hands out a bundle of strangers, say another environment's root, is
refused, the files stay as they are and the agent logs an error.

Which new roots an accepted bundle may add to the anchors is :func:`anchors_added`: today a
root the bundle carries together with a cross-certificate for the same subject and key issued
by a known anchor. A root that is merely listed beside a known anchor is written to ``ca.crt``
(it was published through the authenticated CA) but does not become an anchor, so a later
bundle holding only that root is refused until a rotation publishes it with its
cross-certificate. (The CA's rotation work decides how cross-certificates are published.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from ..errors import ConfigError
from ..files import write_atomic
from ..x509.chain import issued
from ..x509.summary import fingerprint_sha256, is_self_signed, load_pem_bundle

STATE_FILE = "anchors.json"


@dataclass(frozen=True)
class Judgement:
    accepted: bool
    added: frozenset[str] = frozenset()
    reason: str = ""


def anchors_added(bundle: Sequence[x509.Certificate], known: Iterable[str]) -> frozenset[str]:
    """The roots of ``bundle`` that become anchors: each self-signed root whose subject and key
    a known anchor (itself in the bundle) vouches for with a cross-certificate in the bundle.
    The extension point for CA rotations."""
    known = set(known)
    anchors = [c for c in bundle if fingerprint_sha256(c) in known]
    crosses = [c for c in bundle if not is_self_signed(c) and any(issued(a, c) for a in anchors)]
    return frozenset(
        fingerprint_sha256(root) for root in bundle
        if is_self_signed(root) and fingerprint_sha256(root) not in known
        and any(c.subject == root.subject and c.public_key() == root.public_key() for c in crosses))


def judge(pem: str, known: Iterable[str]) -> Judgement:
    """May ``pem`` (a trust bundle fetched from the CA) replace ``ca.crt``?"""
    known = frozenset(known)
    try:
        bundle = load_pem_bundle(pem.encode())
    except ValueError as exc:
        return Judgement(False, reason=f"it is not a PEM bundle ({exc})")
    found = {fingerprint_sha256(c) for c in bundle}
    if not found & known:
        names = ", ".join(c.subject.rfc4514_string() for c in bundle) or "no certificate"
        return Judgement(False, reason=f"it holds none of the roots this agent was bootstrapped with ({names}; "
                                       f"known: {', '.join(sorted(k[:16] for k in known))})")
    return Judgement(True, anchors_added(bundle, known))


@dataclass
class Anchors:
    path: Path
    fingerprints: set[str] = field(default_factory=set)
    saved: bool = False

    @classmethod
    def open(cls, directory: Path, bootstrap_root: Path) -> Anchors:
        """The anchors recorded in ``directory``, else those of the bundle the agent is bootstrapped
        with (recorded on the first :meth:`save`)."""
        path = directory / STATE_FILE
        try:
            doc = json.loads(path.read_text())
            return cls(path, set(doc["anchors"]), saved=True)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the agent's anchors {path}: {exc}; delete it to record the --root "
                              "bundle's roots again") from None
        try:
            roots = load_pem_bundle(bootstrap_root.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the roots in {bootstrap_root}: {exc}") from None
        return cls(path, {fingerprint_sha256(c) for c in roots})

    def save(self) -> None:
        if self.path.parent.is_dir():
            write_atomic(self.path, json.dumps({"anchors": sorted(self.fingerprints)}, indent=2) + "\n")
            self.saved = True

    def judge(self, pem: str) -> Judgement:
        return judge(pem, self.fingerprints)

    def add(self, fingerprints: Iterable[str]) -> None:
        new = set(fingerprints) - self.fingerprints
        if new or not self.saved:
            self.fingerprints |= new
            self.save()
