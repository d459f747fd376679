"""Shared fuzzing strategies: mutate real, valid inputs so the fuzzer gets past the first length
check and into the code behind it, and mix in plain random values for the shallow paths.

Budgets are small on purpose: the whole package runs on every ``pytest`` (a loaded 2-core
machine included), so each property gets tens to a few hundred examples, not thousands.
``TRUSTYARD_FUZZ_SCALE=20`` multiplies every budget, for a longer run now and then.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("TRUSTYARD_FUZZ_SCALE", "1") or 1))


def budget(examples: int) -> settings:
    """``examples`` per run (times ``TRUSTYARD_FUZZ_SCALE``), no per-example deadline (a loaded
    machine is slow, not wrong)."""
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


_SPECIAL_BYTES = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF, 0x30, 0x05, 0x06]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 6) -> bytes:
    """``seed`` with a few edits: bit flips, cuts, inserted noise, odd length bytes, duplicated runs."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        choice = draw(st.sampled_from(["flip", "cut", "insert", "special", "duplicate", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if choice == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif choice == "cut":
            end = min(len(data), position + draw(st.integers(1, 32)))
            del data[position:end]
        elif choice == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif choice == "special" and data:
            data[position] = draw(st.sampled_from(_SPECIAL_BYTES))
        elif choice == "duplicate" and data:
            run = data[position:position + draw(st.integers(1, 64))]
            data[position:position] = run
        elif choice == "truncate":
            data = data[:position]
    return bytes(data)


def bytes_from(*seeds: bytes) -> st.SearchStrategy[bytes]:
    """Mutations of any of ``seeds``, the seeds themselves, and random bytes."""
    return st.one_of(st.sampled_from(seeds).flatmap(mutated), st.sampled_from(seeds), st.binary(max_size=512))


def pem_of(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


def pem_wrapped(label: str, seed_der: bytes) -> st.SearchStrategy[bytes]:
    """A mutated DER inside an intact PEM armour, and a mutated PEM text."""
    return st.one_of(mutated(seed_der).map(lambda d: pem_of(label, d)), mutated(pem_of(label, seed_der)))


def b64url(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False), st.text(max_size=24))
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def replaced_values(doc: dict[str, Any], values: st.SearchStrategy[Any] = json_values
                    ) -> st.SearchStrategy[dict[str, Any]]:
    """``doc`` with some members replaced by other JSON values, some removed, some added."""
    keys = sorted(doc)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = dict(doc)
        for key in draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True)) if keys else []:
            if draw(st.booleans()):
                del out[key]
            else:
                out[key] = draw(values)
        out.update(draw(st.dictionaries(st.text(max_size=6), values, max_size=2)))
        return out

    return build()


def expect_only(designed: type[BaseException] | tuple[type[BaseException], ...],
                call: Callable[[], Any], check: Callable[[BaseException], None] | None = None) -> Any:
    """Run ``call``; a ``designed`` exception is fine (and passed to ``check``), anything else fails."""
    try:
        return call()
    except designed as exc:
        if check is not None:
            check(exc)
        return None


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()
