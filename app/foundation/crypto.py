"""Values sealed with AES-GCM under the operator's ``ENCRYPTION_KEYS``: the codec, nothing more.

A sealed value is a short text, the envelope ``tlenc1.<key id>.<nonce + ciphertext, base64url>``:
a version, the id of the key that sealed it (the first 8 hex digits of the key's SHA-256, so
that any of the keys opens it and ``flask keys rotate`` knows which envelopes are old), and
a fresh 96-bit nonce per value. The associated data (a job's id) binds the ciphertext to its
owner: moved to another job, it does not open. The value itself is JSON.

The cryptography is the ``cryptography`` package's AESGCM; nothing here is home-made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PREFIX", "DecryptError", "KeyRing", "UnknownKeyError", "is_sealed", "parse_keys"]

#: How every envelope of this version starts.
PREFIX = "tlenc1."
_NONCE_BYTES = 12
_KEY_BYTES = 32


class DecryptError(ValueError):
    """An envelope does not open: tampered, malformed, or sealed for another owner."""


class UnknownKeyError(DecryptError):
    """An envelope was sealed under a key that is no longer in ``ENCRYPTION_KEYS``."""


def is_sealed(value: Any) -> bool:
    """True when ``value`` is an envelope of this codec."""
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id(key: bytes) -> str:
    """The public id of a key (in each envelope it seals)."""
    return hashlib.sha256(key).hexdigest()[:8]


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The keys of an ``ENCRYPTION_KEYS`` value (comma-separated base64 of 32 bytes each).

    Raises ValueError saying what is wrong (never echoing a key).
    """
    out: list[bytes] = []
    for n, part in enumerate((p.strip() for p in text.split(",")), start=1):
        if not part:
            continue
        try:
            standard = part.replace("-", "+").replace("_", "/").rstrip("=")
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {n} is not base64") from None
        if len(key) != _KEY_BYTES:
            raise ValueError(f"key {n} is {len(key)} bytes; each must be 32 bytes (base64 of 32 random ones)")
        out.append(key)
    if len({key_id(k) for k in out}) != len(out):
        raise ValueError("the same key is listed twice")
    return tuple(out)


@dataclass(frozen=True)
class KeyRing:
    """The keys in force: the first seals, every one opens."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """The ring of an ``ENCRYPTION_KEYS`` value (raises ValueError)."""
        return cls(parse_keys(text))

    @property
    def current_id(self) -> str:
        """The id of the key that seals."""
        return key_id(self.keys[0])

    def ids(self) -> Iterable[str]:
        return (key_id(k) for k in self.keys)

    def seal(self, value: Any, owner: str) -> str:
        """``value`` (JSON) sealed under the first key, bound to ``owner`` (a job id)."""
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = AESGCM(self.keys[0]).encrypt(nonce, plain, owner.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self.current_id}.{body}"

    def open(self, envelope: str, owner: str) -> Any:
        """The value sealed in ``envelope`` for ``owner`` (raises DecryptError, UnknownKeyError)."""
        kid, body = envelope_parts(envelope)
        key = next((k for k in self.keys if key_id(k) == kid), None)
        if key is None:
            raise UnknownKeyError(
                f"sealed under key {kid}, which is not in ENCRYPTION_KEYS "
                f"(keys in force: {', '.join(self.ids())})"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise DecryptError("the envelope is not base64") from None
        if len(raw) <= _NONCE_BYTES:
            raise DecryptError("the envelope is too short")
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], owner.encode())
        except InvalidTag:
            raise DecryptError("the envelope does not open: altered, or sealed for another job") from None
        return json.loads(plain)

    def fingerprint(self, text: str) -> str:
        """A keyed digest of ``text`` (HMAC-SHA256 under a key derived from the first key): what a
        record stores in place of a value, unlike a plain hash not checkable by guessing values."""
        derived = hmac.new(self.keys[0], b"tasklane fingerprint v1", hashlib.sha256).digest()
        return hmac.new(derived, text.encode(), hashlib.sha256).hexdigest()

    def is_current(self, envelope: str) -> bool:
        """True when ``envelope`` was sealed under the first key."""
        return envelope_parts(envelope)[0] == self.current_id

    def reseal(self, envelope: str, owner: str) -> str:
        """``envelope`` sealed again under the first key (unchanged when it already is)."""
        if self.is_current(envelope):
            return envelope
        return self.seal(self.open(envelope, owner), owner)


def envelope_parts(envelope: str) -> tuple[str, str]:
    """The key id and the body of an envelope (raises DecryptError)."""
    if not is_sealed(envelope):
        raise DecryptError("not an encrypted value")
    kid, dot, body = envelope[len(PREFIX) :].partition(".")
    if not dot or len(kid) != 8 or not body:
        raise DecryptError("malformed envelope")
    return kid, body
