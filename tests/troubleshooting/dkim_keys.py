"""DKIM key records (RFC 6376 / RFC 8463) with real keys, for the DNS zones of tests."""

from __future__ import annotations

import base64
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def _spki(public_key) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@cache
def rsa_record(bits: int = 2048) -> str:
    """``v=DKIM1; k=rsa; p=...`` with an RSA public key of ``bits`` bits. Keys under 1024
    bits can no longer be generated, so a short one is built from its numbers (a modulus of
    that size; nobody signs with it)."""
    if bits >= 1024:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    else:
        public = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0x1235).public_key()
    return f"v=DKIM1; k=rsa; p={_spki(public)}"


@cache
def ed25519_record() -> str:
    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
