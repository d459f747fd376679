"""Key types trustyard issues for and signs with, and how keys are (de)serialized."""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyType(enum.StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown key type {text!r}: choose one of {names}") from None

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")


_CURVES: dict[str, KeyType] = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}


def generate_private_key(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.value[4:]))


def key_type_of(key: PublicKey | PrivateKey) -> KeyType | None:
    """The KeyType of a key, or None for keys trustyard does not support (e.g. RSA-1024)."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return _CURVES.get(key.curve.name)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return KeyType.ED25519
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        try:
            return KeyType(f"rsa-{key.key_size}")
        except ValueError:
            return None
    return None


def describe_key(key: object) -> str:
    """``ec-p256``, ``rsa-1024`` or the class name: for messages about unsupported keys."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        known = _CURVES.get(key.curve.name)
        return known.value if known else f"ec-{key.curve.name}"
    kt = key_type_of(key)  # type: ignore[arg-type]
    return kt.value if kt else type(key).__name__


def signature_hash(key: PrivateKey | PublicKey) -> hashes.HashAlgorithm | None:
    """The hash to sign with: None for Ed25519, SHA-384 for P-384, else SHA-256."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def jws_algorithm(key: PrivateKey | PublicKey) -> str:
    """The JOSE ``alg`` that signs with this key."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ES384" if key.curve.key_size >= 384 else "ES256"
    return "RS256"


def private_key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key_pem(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key; raises ValueError with a readable reason."""
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError as exc:  # password given for an unencrypted key or missing for an encrypted one
        if password:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            raise ValueError("the key is encrypted: give its password") from exc
    except ValueError as exc:
        raise ValueError(f"cannot load private key (wrong password or not a key): {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    return spki_der(a) == spki_der(b)
