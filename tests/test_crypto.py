"""The AES-GCM codec of encrypted arguments (app/foundation/crypto.py) and ENCRYPTION_KEYS."""

from __future__ import annotations

import base64
import os

import pytest

from app.foundation.config import load_or_exit
from app.foundation.crypto import DecryptError, KeyRing, UnknownKeyError, is_sealed, parse_keys


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_round_trip_and_a_fresh_nonce_per_value() -> None:
    ring = KeyRing.from_text(new_key())
    value = {"card": "4111-1111-1111-1111", "n": 3, "nested": [1, "é"]}
    first, second = ring.seal(value, "job-1"), ring.seal(value, "job-1")
    assert is_sealed(first) and first.startswith(f"tlenc1.{ring.current_id}.")
    assert first != second  # a fresh nonce each time
    assert "4111" not in first
    assert ring.open(first, "job-1") == value
    assert ring.open(second, "job-1") == value


def test_a_tampered_envelope_does_not_open() -> None:
    ring = KeyRing.from_text(new_key())
    sealed = ring.seal({"secret": "x" * 20}, "job-1")
    prefix, body = sealed.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for position in (0, 12, len(raw) - 1):  # the nonce, the ciphertext, the tag
        altered = bytearray(raw)
        altered[position] ^= 0x01
        forged = f"{prefix}.{base64.urlsafe_b64encode(bytes(altered)).decode().rstrip('=')}"
        with pytest.raises(DecryptError, match="does not open"):
            ring.open(forged, "job-1")
    for malformed in ("tlenc1.", "tlenc1.abcdefgh.", "tlenc1.abc.xyz", "plain text", "tlenc1.abcdefgh.AAAA"):
        with pytest.raises(DecryptError):
            ring.open(malformed, "job-1")


def test_a_ciphertext_moved_to_another_job_does_not_open() -> None:
    ring = KeyRing.from_text(new_key())
    sealed = ring.seal({"token": "abc"}, "job-1")
    with pytest.raises(DecryptError, match="another job"):
        ring.open(sealed, "job-2")


def test_rotation_first_key_seals_every_key_opens() -> None:
    old, new = new_key(), new_key()
    before = KeyRing.from_text(old)
    sealed = before.seal("payload", "job-1")
    after = KeyRing.from_text(f"{new},{old}")
    assert after.open(sealed, "job-1") == "payload"
    assert not after.is_current(sealed)
    resealed = after.reseal(sealed, "job-1")
    assert after.is_current(resealed) and resealed != sealed
    assert after.reseal(resealed, "job-1") == resealed  # already under the first key: unchanged
    assert KeyRing.from_text(new).open(resealed, "job-1") == "payload"  # the old key can go now


def test_a_value_sealed_under_a_key_that_is_gone_names_the_key() -> None:
    gone = KeyRing.from_text(new_key())
    sealed = gone.seal([1, 2], "job-1")
    ring = KeyRing.from_text(new_key())
    with pytest.raises(UnknownKeyError, match=f"key {gone.current_id}, which is not in ENCRYPTION_KEYS"):
        ring.open(sealed, "job-1")


def test_keys_parse_standard_and_url_safe_base64() -> None:
    raw = os.urandom(32)
    standard, url_safe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_keys(standard) == (raw,)
    assert parse_keys(f" {url_safe} ,") == (raw,)
    assert parse_keys("") == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not base64!", "key 1 is not base64"),
        (base64.b64encode(b"short").decode(), "key 1 is 5 bytes; each must be 32 bytes"),
        ("KEY,KEY", "the same key is listed twice"),
    ],
)
def test_a_bad_encryption_keys_stops_the_process_with_one_line(
    value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key()
    with pytest.raises(SystemExit) as info:
        load_or_exit({"ENCRYPTION_KEYS": value.replace("KEY", key)}, process="worker")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"worker: configuration error: ENCRYPTION_KEYS: {problem}")
    assert key not in err


def test_keys_are_secrets_of_the_settings() -> None:
    key = new_key()
    settings = load_or_exit({"ENCRYPTION_KEYS": key})
    assert settings.encryption_keys == (key,)
    assert key in settings.secret_values()
    assert key not in repr(settings.public())


def test_fingerprints_are_stable_under_one_key_and_differ_under_another() -> None:
    ring, other = KeyRing.from_text(new_key()), KeyRing.from_text(new_key())
    assert ring.fingerprint("4111") == ring.fingerprint("4111") != ring.fingerprint("4112")
    assert ring.fingerprint("4111") != other.fingerprint("4111")
    assert len(ring.fingerprint("4111")) == 64
