"""trustyard.check.validate: one typed error per failure class, a report when healthy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from trustyard import check
from trustyard.errors import TrustyardError
from trustyard.testing import TestCA
from trustyard.x509 import keys, profiles
from trustyard.x509.names import parse_names

from .conftest import NOW, Files, check_ca, leaf_of

H = dt.timedelta(hours=1)


def run(files: Files, **kwargs: object) -> check.CheckReport:
    kwargs.setdefault("now", NOW)
    return check.validate(files.cert, files.key, files.ca, **kwargs)  # type: ignore[arg-type]


class TestHealthy:
    def test_report(self, healthy: Files) -> None:
        report = run(healthy, name="orders.internal", min_remaining="12h", usage="server")
        assert report.ok and report.failures == []
        assert report.summary["serial"] == format(healthy.leaf.serial_number, "x")
        assert report.summary["sans"] == ["orders.internal", "10.0.0.7", "spiffe://prod.internal/orders"]
        assert report.summary["issuer"] == "CN=Check Intermediate"
        assert report.chain == ["SAN=orders.internal,10.0.0.7,spiffe://prod.internal/orders",
                                "CN=Check Intermediate", "CN=Check Root"]
        assert report.chain_method == "cryptography"
        assert report.remaining == 23 * H
        assert report.to_dict()["time_left"] == "23h 0m"
        assert set(report.checks) == set(check.CHECKS)

    def test_accepts_bytes_and_objects(self, healthy: Files, mini_ca: TestCA) -> None:
        key = keys.load_private_key_pem(healthy.key.read_bytes())
        report = check.validate(healthy.cert.read_bytes(), key, [mini_ca.root], now=NOW)
        assert report.ok

    @pytest.mark.parametrize("key_type", [keys.KeyType.ED25519, keys.KeyType.RSA_2048, keys.KeyType.EC_P384])
    def test_other_key_types(self, key_type: keys.KeyType, write: Callable[..., Files]) -> None:
        ca = check_ca(key_type)
        leaf, key = leaf_of(ca, "orders.internal")
        report = run(write(leaf, key, [ca.cert], [ca.root]), name="orders.internal")
        assert report.ok
        expected = "trustyard fallback (Ed25519)" if key_type is keys.KeyType.ED25519 else "cryptography"
        assert report.chain_method == expected


class TestChain:
    def test_unknown_ca(self, healthy: Files, write: Callable[..., Files]) -> None:
        other = check_ca()
        leaf, key = leaf_of(check_ca(), "orders.internal")
        with pytest.raises(check.ChainInvalid, match=r"unknown_issuer|missing_intermediate"):
            run(write(leaf, key, [], [other.root]))

    def test_missing_intermediate(self, mini_ca: TestCA, write: Callable[..., Files]) -> None:
        leaf, key = leaf_of(mini_ca, "orders.internal")
        with pytest.raises(check.ChainInvalid, match="missing_intermediate"):
            run(write(leaf, key, [], [mini_ca.root]))

    def test_self_signed_leaf_is_refused_even_when_pinned(self, write: Callable[..., Files]) -> None:
        key = keys.generate_private_key(keys.KeyType.EC_P256)
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "orders.internal")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(NOW - H).not_valid_after(NOW + 24 * H)
                .add_extension(x509.SubjectAlternativeName(parse_names(["orders.internal"])), critical=False)
                .sign(key, keys.signature_hash(key)))  # type: ignore[arg-type]
        with pytest.raises(check.ChainInvalid, match="self-signed"):
            run(write(cert, key, [], [cert]))

    def test_ed25519_chain_from_another_ca_fails_in_the_fallback(self, write: Callable[..., Files]) -> None:
        ours, theirs = check_ca(keys.KeyType.ED25519), check_ca(keys.KeyType.ED25519)
        leaf, key = leaf_of(theirs, "orders.internal")
        with pytest.raises(check.ChainInvalid):
            run(write(leaf, key, [theirs.cert], [ours.root]))

    @pytest.mark.parametrize("key_type", [keys.KeyType.EC_P256, keys.KeyType.ED25519])
    def test_name_constraints_are_enforced(self, key_type: keys.KeyType, write: Callable[..., Files]) -> None:
        ca = check_ca(key_type, limits=profiles.NameLimits(dns=("prod.internal",)))
        ok_leaf, ok_key = leaf_of(ca, "orders.prod.internal")
        assert run(write(ok_leaf, ok_key, [ca.cert], [ca.root])).ok
        leaf, key = leaf_of(ca, "orders.staging.internal")
        with pytest.raises(check.ChainInvalid):
            run(write(leaf, key, [ca.cert], [ca.root]))

    def test_fallback_refuses_a_non_ca_issuer(self, mini_ca: TestCA, write: Callable[..., Files]) -> None:
        # An Ed25519 "intermediate" that is really a leaf signs another leaf.
        ca = check_ca(keys.KeyType.ED25519)
        middle, middle_key = leaf_of(ca, "middle.internal")
        key = keys.generate_private_key(keys.KeyType.ED25519)
        spec = profiles.LeafSpec(key.public_key(), tuple(parse_names(["orders.internal"])), NOW - H, NOW + H,
                                 profiles.new_serial())
        leaf = profiles.sign(profiles.leaf_builder(spec, middle), middle_key)
        with pytest.raises(check.ChainInvalid, match="not a CA"):
            run(write(leaf, key, [middle, ca.cert], [ca.root]))


class TestOtherClasses:
    def test_key_mismatch(self, mini_ca: TestCA, write: Callable[..., Files]) -> None:
        leaf, _ = leaf_of(mini_ca, "orders.internal")
        with pytest.raises(check.KeyMismatch):
            run(write(leaf, keys.generate_private_key(keys.KeyType.EC_P256), [mini_ca.cert],
                      [mini_ca.root]))

    def test_expired(self, healthy: Files) -> None:
        with pytest.raises(check.OutsideValidity, match="expired") as info:
            run(healthy, now=NOW + 48 * H)
        assert not isinstance(info.value, check.NotEnoughTimeLeft)
        assert info.value.report is not None and info.value.report.checks["chain"].startswith("ok")

    def test_not_yet_valid(self, healthy: Files) -> None:
        with pytest.raises(check.OutsideValidity, match="valid only from"):
            run(healthy, now=NOW - 2 * H)

    @pytest.mark.parametrize(("threshold", "ok"), [("96%", False), ("95%", True), ("33%", True), ("12h", True),
                                                     ("23h", True), ("24h", False), (dt.timedelta(days=2), False)])
    def test_time_left(self, healthy: Files, threshold: object, ok: bool) -> None:
        # 24 h lifetime, 23 h left at NOW.
        if ok:
            assert run(healthy, min_remaining=threshold).ok
        else:
            with pytest.raises(check.NotEnoughTimeLeft, match="left, at least"):
                run(healthy, min_remaining=threshold)

    def test_ca_certificate(self, mini_ca: TestCA, write: Callable[..., Files]) -> None:
        files = write(mini_ca.cert, mini_ca.key, [], [mini_ca.root])
        with pytest.raises(check.IsCA):
            run(files)

    def test_eku_must_fit_the_usage(self, mini_ca: TestCA, write: Callable[..., Files]) -> None:
        leaf, key = leaf_of(mini_ca, "orders.internal", eku=("clientAuth",))
        files = write(leaf, key, [mini_ca.cert], [mini_ca.root])
        assert run(files, usage="client").ok
        with pytest.raises(check.WrongUsage, match="does not allow serverAuth"):
            run(files, usage="server")

    @pytest.mark.parametrize(("name", "ok"), [
        ("orders.internal", True), ("ORDERS.internal.", True), ("10.0.0.7", True),
        ("spiffe://prod.internal/orders", True), ("billing.internal", False), ("10.0.0.8", False),
        ("spiffe://prod.internal/billing", False),
    ])
    def test_name(self, healthy: Files, name: str, ok: bool) -> None:
        if ok:
            assert run(healthy, name=name).ok
        else:
            with pytest.raises(check.NameMismatch):
                run(healthy, name=name)

    def test_all_failures_are_reported_and_the_first_is_raised(self, mini_ca: TestCA,
                                                               write: Callable[..., Files]) -> None:
        leaf, _ = leaf_of(mini_ca, "orders.internal", eku=("clientAuth",))
        files = write(leaf, keys.generate_private_key(keys.KeyType.EC_P256), [mini_ca.cert],
                      [mini_ca.root])
        with pytest.raises(check.KeyMismatch) as info:
            run(files, name="billing.internal", now=NOW + 48 * H)
        report = info.value.report
        assert report is not None
        assert [type(f) for f in report.failures] == [check.KeyMismatch, check.OutsideValidity,
                                                       check.WrongUsage, check.NameMismatch]

    def test_errors_are_trustyard_errors_with_distinct_exit_codes(self) -> None:
        classes = [check.CheckInputError, *check.ORDER]
        assert all(issubclass(c, TrustyardError) for c in classes)
        assert len({c.exit_code for c in classes}) == len(classes)
        assert 0 not in {c.exit_code for c in classes} and 2 not in {c.exit_code for c in classes}

    def test_unreadable_input(self, healthy: Files, tmp_path: Path) -> None:
        with pytest.raises(check.CheckInputError, match="cannot read"):
            check.validate(tmp_path / "missing.crt", healthy.key, healthy.ca)
        (tmp_path / "junk.crt").write_text("not a certificate")
        with pytest.raises(check.CheckInputError, match="no PEM or DER"):
            check.validate(tmp_path / "junk.crt", healthy.key, healthy.ca)
        with pytest.raises(check.CheckInputError, match="key"):
            check.validate(healthy.cert, healthy.cert, healthy.ca)
