"""Envelope encryption: the master key on disk, data keys wrapped by it, values bound by AAD."""

from __future__ import annotations

import base64
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from legato.crypto import (
    PREFIX,
    DecryptionFailed,
    Keyring,
    key_id_of,
    load_master_key,
    parse_master_key,
)
from legato.errors import ValidationFailed

AAD = "config:shop:production:secret:DB_PASSWORD"


def keyring(master: bytes | None = None) -> Keyring:
    """A keyring with one active data key, as a Store's first start leaves it."""
    ring = Keyring(master if master is not None else secrets.token_bytes(32))
    ring.new_data_key()
    return ring


def _body_flipped(ciphertext: str) -> str:
    """The ciphertext with one byte of its sealed body changed (key id left intact)."""
    head, _, body = ciphertext.rpartition(":")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01
    return f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


# the master key -----------------------------------------------------------------------------


def test_first_load_writes_a_new_key_file_readable_only_by_its_owner(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "master.key"
    key = load_master_key("", key_file)
    assert len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert base64.b64decode(key_file.read_text().strip()) == key


def test_later_loads_read_back_the_same_key_without_rewriting_it(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    first = load_master_key("", key_file)
    written = key_file.read_text()
    assert load_master_key("", key_file) == first
    assert key_file.read_text() == written


def test_a_configured_key_wins_over_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    on_disk = load_master_key("", key_file)
    configured = secrets.token_bytes(32)
    assert load_master_key(base64.b64encode(configured).decode(), key_file) == configured
    assert configured != on_disk


def test_a_configured_key_creates_no_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    configured = secrets.token_bytes(32)
    assert load_master_key(base64.b64encode(configured).decode(), key_file) == configured
    assert not key_file.exists()


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode],
                         ids=["standard", "urlsafe"])
def test_parse_master_key_accepts_standard_and_urlsafe_base64_padded_or_not(
    encode: Callable[[bytes], bytes],
) -> None:
    # bytes that encode to both + and / (or - and _) in base64
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFB, 0xFF])
    text = encode(key).decode()
    assert parse_master_key(text) == key
    assert parse_master_key(text.rstrip("=")) == key
    assert parse_master_key(f"  {text}\n") == key


@pytest.mark.parametrize("text", [
    base64.b64encode(secrets.token_bytes(16)).decode(),
    base64.b64encode(secrets.token_bytes(33)).decode(),
    "",
])
def test_a_master_key_of_the_wrong_length_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed, match="32 bytes"):
        parse_master_key(text)


@pytest.mark.parametrize("text", [
    "not base64 at all!", "abcde", "clé-secrète-de-trente-deux-octets!!!!!!!!!",
])
def test_a_master_key_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_master_key(text)


def test_a_bad_configured_key_is_refused_even_with_a_good_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    load_master_key("", key_file)
    with pytest.raises(ValidationFailed):
        load_master_key("too-short", key_file)


def test_a_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(31)).decode())
    with pytest.raises(ValidationFailed):
        load_master_key("", key_file)


# values -------------------------------------------------------------------------------------


def test_encrypt_then_decrypt_gives_back_the_plaintext() -> None:
    ring = keyring()
    for plaintext in ["hunter2", "", "ünïcode ✓ and : colons", "x" * 10_000]:
        assert ring.decrypt(ring.encrypt(plaintext, AAD), AAD) == plaintext


def test_a_ciphertext_starts_with_the_prefix_and_names_its_data_key() -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    assert ciphertext.startswith(PREFIX)
    assert ciphertext.startswith("enc:v1:")
    assert ring.active is not None
    assert key_id_of(ciphertext) == ring.active
    assert "hunter2" not in ciphertext


def test_the_same_plaintext_twice_gives_different_ciphertexts() -> None:
    ring = keyring()
    first, second = ring.encrypt("hunter2", AAD), ring.encrypt("hunter2", AAD)
    assert first != second
    assert ring.decrypt(first, AAD) == ring.decrypt(second, AAD) == "hunter2"


def test_encrypt_without_an_active_data_key_fails() -> None:
    with pytest.raises(DecryptionFailed, match="no data key"):
        Keyring(secrets.token_bytes(32)).encrypt("hunter2", AAD)


def test_values_made_under_an_older_data_key_still_decrypt_after_a_new_one() -> None:
    ring = keyring()
    old = ring.encrypt("hunter2", AAD)
    new_id, _ = ring.new_data_key()
    assert ring.active == new_id
    assert key_id_of(ring.encrypt("x", AAD)) == new_id
    assert ring.decrypt(old, AAD) == "hunter2"


def test_decrypting_with_other_associated_data_fails() -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    with pytest.raises(DecryptionFailed, match="integrity"):
        ring.decrypt(ciphertext, "config:shop:production:secret:API_KEY")


def test_a_tampered_ciphertext_fails_to_decrypt() -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(_body_flipped(ciphertext), AAD)


@pytest.mark.parametrize("keep", [0, 4, 16, 27], ids=lambda n: f"body-{n}-chars")
def test_a_truncated_ciphertext_fails_to_decrypt_as_decryption_failed(keep: int) -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    head, _, body = ciphertext.rpartition(":")
    with pytest.raises(DecryptionFailed):
        ring.decrypt(f"{head}:{body[:keep]}", AAD)


@pytest.mark.parametrize("text", ["hunter2", "enc:v2:dk_1:abcd", "enc:v1:dk_1:not base64 !!"])
def test_text_that_is_not_a_well_formed_ciphertext_fails_to_decrypt(text: str) -> None:
    with pytest.raises(DecryptionFailed):
        keyring().decrypt(text, AAD)


def test_a_ciphertext_naming_an_unknown_data_key_fails_to_decrypt() -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    renamed = ciphertext.replace(key_id_of(ciphertext), "dk_000000000000", 1)
    with pytest.raises(DecryptionFailed, match="unknown data key") as caught:
        ring.decrypt(renamed, AAD)
    assert caught.value.details == {"key_id": "dk_000000000000"}


def test_a_keyring_with_another_master_key_cannot_decrypt() -> None:
    ciphertext = keyring().encrypt("hunter2", AAD)
    with pytest.raises(DecryptionFailed):
        keyring().decrypt(ciphertext, AAD)


def test_forgotten_data_keys_no_longer_decrypt() -> None:
    ring = keyring()
    ciphertext = ring.encrypt("hunter2", AAD)
    ring.forget(key_id_of(ciphertext))
    with pytest.raises(DecryptionFailed, match="unknown data key"):
        ring.decrypt(ciphertext, AAD)


# data keys ----------------------------------------------------------------------------------


def test_a_keyring_on_the_same_master_loads_wrapped_keys_and_decrypts() -> None:
    master = secrets.token_bytes(32)
    first = Keyring(master)
    key_id, wrapped = first.new_data_key()
    ciphertext = first.encrypt("hunter2", AAD)

    second = Keyring(master)
    second.load({key_id: wrapped}, key_id)
    assert second.active == key_id
    assert second.master_id == first.master_id
    assert second.decrypt(ciphertext, AAD) == "hunter2"


def test_wrapped_data_keys_do_not_contain_the_data_key_in_clear() -> None:
    ring = Keyring(secrets.token_bytes(32))
    key_id, wrapped = ring.new_data_key()
    assert key_id.startswith("dk_")
    assert key_id not in wrapped
    assert len(base64.urlsafe_b64decode(wrapped + "=" * (-len(wrapped) % 4))) == 12 + 32 + 16


def test_loading_data_keys_wrapped_by_another_master_key_fails() -> None:
    key_id, wrapped = Keyring(secrets.token_bytes(32)).new_data_key()
    other = Keyring(secrets.token_bytes(32))
    with pytest.raises(DecryptionFailed, match="master key") as caught:
        other.load({key_id: wrapped}, key_id)
    assert caught.value.details == {"key_id": key_id}


def test_a_wrapped_data_key_stored_under_another_id_fails_to_load() -> None:
    master = secrets.token_bytes(32)
    _, wrapped = Keyring(master).new_data_key()
    with pytest.raises(DecryptionFailed):
        Keyring(master).load({"dk_aaaaaaaaaaaa": wrapped}, "dk_aaaaaaaaaaaa")


def test_a_truncated_wrapped_data_key_fails_to_load_as_decryption_failed() -> None:
    master = secrets.token_bytes(32)
    key_id, wrapped = Keyring(master).new_data_key()
    with pytest.raises(DecryptionFailed):
        Keyring(master).load({key_id: wrapped[:8]}, key_id)


def test_master_ids_are_stable_per_master_and_differ_between_masters() -> None:
    master = secrets.token_bytes(32)
    assert Keyring(master).master_id == Keyring(master).master_id
    assert Keyring(master).master_id != Keyring(secrets.token_bytes(32)).master_id


# digests ------------------------------------------------------------------------------------


def test_digest_is_stable_for_a_master_key_and_separates_texts() -> None:
    master = secrets.token_bytes(32)
    ring = Keyring(master)
    assert ring.digest("DB_PASSWORD=hunter2") == ring.digest("DB_PASSWORD=hunter2")
    assert ring.digest("DB_PASSWORD=hunter2") == Keyring(master).digest("DB_PASSWORD=hunter2")
    assert ring.digest("DB_PASSWORD=hunter2") != ring.digest("DB_PASSWORD=hunter3")


def test_digest_differs_between_master_keys_and_does_not_depend_on_data_keys() -> None:
    master = secrets.token_bytes(32)
    ring = Keyring(master)
    before = ring.digest("hunter2")
    ring.new_data_key()
    assert ring.digest("hunter2") == before
    assert Keyring(secrets.token_bytes(32)).digest("hunter2") != before
    assert "hunter2" not in before
