"""Envelope encryption of configuration at rest: AES-256-GCM under data keys, which are
themselves encrypted ("wrapped") by one master key that never touches the database.

A ciphertext names the data key it was made with (`enc:v1:<key id>:<nonce+ciphertext>`), so
keys can be rotated while old values stay readable, and it is bound to where it belongs by
associated data (a value moved to another row or key does not decrypt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from legato.errors import LegatoError, ValidationFailed

PREFIX = "enc:v1:"
_NONCE = 12
_KEY = 32


class DecryptionFailed(LegatoError):
    """A stored value cannot be decrypted: wrong master key, unknown data key, or tampering."""

    status = 500
    code = "DECRYPTION_FAILED"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_master_key(text: str) -> bytes:
    """32 bytes from their base64 (standard or URL-safe) text."""
    try:
        key = _unb64(text.strip().replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("the master key must be base64 of 32 random bytes") from exc
    if len(key) != _KEY:
        raise ValidationFailed(f"the master key must be 32 bytes, got {len(key)}")
    return key


def load_master_key(configured: str, key_file: Path) -> bytes:
    """The configured master key, else the key file's, else a new one written to the key file
    (mode 0600, created exclusively so two starts never make two keys)."""
    if configured:
        return parse_master_key(configured)
    if key_file.exists():
        return parse_master_key(key_file.read_text())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(_KEY)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
    return key


def master_key_id(master: bytes) -> str:
    """A short public name of the master key, stored beside the data keys it wraps."""
    return hashlib.sha256(b"legato-master-key-id:" + master).hexdigest()[:12]


class Keyring:
    """The master key and the data keys it unwraps; one data key is active for new values."""

    def __init__(self, master: bytes) -> None:
        self._master = AESGCM(master)
        self.master_id = master_key_id(master)
        self._digest_key = hmac.new(master, b"legato-config-digest", hashlib.sha256).digest()
        self._keys: dict[str, AESGCM] = {}
        self.active: str | None = None

    # data keys ------------------------------------------------------------------------------

    def new_data_key(self) -> tuple[str, str]:
        """A fresh data key, made active: (key id, wrapped key to store)."""
        key_id = "dk_" + secrets.token_hex(6)
        key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(_NONCE)
        wrapped = nonce + self._master.encrypt(nonce, key, _key_aad(key_id))
        self._keys[key_id] = AESGCM(key)
        self.active = key_id
        return key_id, _b64(wrapped)

    def load(self, wrapped: Mapping[str, str], active: str | None) -> None:
        """Unwrap stored data keys; one that the master key cannot open is an error at start,
        not a surprise at the first deploy."""
        for key_id, text in wrapped.items():
            blob = _unb64(text)
            try:
                key = self._master.decrypt(blob[:_NONCE], blob[_NONCE:], _key_aad(key_id))
            except (InvalidTag, ValueError) as exc:  # ValueError: too short to hold a nonce
                raise DecryptionFailed(
                    f"data key {key_id} cannot be unwrapped: is this the master key it was made "
                    "with (LEGATO_MASTER_KEY or <data dir>/master.key)?",
                    details={"key_id": key_id}) from exc
            self._keys[key_id] = AESGCM(key)
        self.active = active

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    # values ---------------------------------------------------------------------------------

    def encrypt(self, plaintext: str, aad: str) -> str:
        if self.active is None:
            raise DecryptionFailed("no data key is active")
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._keys[self.active].encrypt(nonce, plaintext.encode(), aad.encode())
        return f"{PREFIX}{self.active}:{_b64(nonce + sealed)}"

    def decrypt(self, ciphertext: str, aad: str) -> str:
        key_id, blob = _split(ciphertext)
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptionFailed(f"value encrypted under unknown data key {key_id}",
                                   details={"key_id": key_id})
        try:
            return key.decrypt(blob[:_NONCE], blob[_NONCE:], aad.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed("a stored value failed its integrity check",
                                   details={"key_id": key_id}) from exc

    def digest(self, text: str) -> str:
        """A keyed digest: equal texts give equal digests, but nobody without the master key
        can test a guess against it (fingerprints hash configuration this way)."""
        return hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()[:32]


def key_id_of(ciphertext: str) -> str:
    return _split(ciphertext)[0]


def _split(ciphertext: str) -> tuple[str, bytes]:
    if not ciphertext.startswith(PREFIX):
        raise DecryptionFailed("stored value is not an encrypted value")
    key_id, _, body = ciphertext.removeprefix(PREFIX).partition(":")
    try:
        return key_id, _unb64(body)
    except (binascii.Error, ValueError) as exc:
        raise DecryptionFailed("stored value is malformed", details={"key_id": key_id}) from exc


def _key_aad(key_id: str) -> bytes:
    return f"legato-data-key:{key_id}".encode()
