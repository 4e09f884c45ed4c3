"""The Legato-Signature scheme: a fixed vector (computed with `openssl dgst -sha256 -hmac`),
and what verify refuses: another body, another secret, an old or future timestamp, junk."""

from __future__ import annotations

import pytest

from legato.outbound.signing import parse, sign, verify

SECRET = "whsec_test-secret"
BODY = b'{"id":"whd_0123456789abcdef","type":"ping"}'
T = 1_700_000_000
# printf '%s' '1700000000.{"id":"whd_0123456789abcdef","type":"ping"}' \
#   | openssl dgst -sha256 -hmac 'whsec_test-secret'
EXPECTED = "be4c8bba8626d97b716f85d8d4abb47b2ca62db62f56c40a46dac952e716ab8d"


def test_sign_matches_an_independently_computed_vector() -> None:
    assert sign(SECRET, T, BODY) == f"t={T},v1={EXPECTED}"


def test_verify_accepts_its_own_signature_within_the_tolerance() -> None:
    header = sign(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=T)
    assert verify(SECRET, header, BODY, now=T + 299)
    assert verify(SECRET, header, BODY, now=T - 299)  # a receiver's clock a little behind


def test_verify_refuses_a_tampered_body() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY.replace(b"ping", b"pong"), now=T)
    assert not verify(SECRET, header, BODY + b" ", now=T)


def test_verify_refuses_another_secret() -> None:
    assert not verify("whsec_other", sign(SECRET, T, BODY), BODY, now=T)


def test_verify_refuses_an_old_or_future_timestamp() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY, now=T + 301)
    assert not verify(SECRET, header, BODY, now=T - 301)
    assert verify(SECRET, header, BODY, now=T + 3000, tolerance_s=3600)


def test_the_timestamp_is_signed_so_it_cannot_be_moved_forward() -> None:
    replayed = sign(SECRET, T, BODY).replace(f"t={T}", f"t={T + 1000}")
    assert not verify(SECRET, replayed, BODY, now=T + 1000)


@pytest.mark.parametrize("header", [
    "", "garbage", f"t={T}", f"v1={EXPECTED}", f"t=abc,v1={EXPECTED}", f"t={T},v1=",
    f"t={T},v0={EXPECTED}",
])
def test_verify_refuses_malformed_headers(header: str) -> None:
    assert not verify(SECRET, header, BODY, now=T)


def test_any_one_of_several_v1_signatures_is_enough() -> None:
    header = f"t={T},v1={'0' * 64},v1={EXPECTED}"
    assert parse(header) == (T, ["0" * 64, EXPECTED])
    assert verify(SECRET, header, BODY, now=T)
    assert not verify(SECRET, f"t={T},v1={'0' * 64}", BODY, now=T)
