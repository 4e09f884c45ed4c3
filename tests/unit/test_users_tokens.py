"""Users, login sessions and self-service API tokens."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from legato.config import Settings
from legato.platform import Platform
from legato.store import Store
from tests.unit.conftest import Tokens, bearer

PASSWORD = "correct horse battery staple"


async def make_user(client: httpx.AsyncClient, tokens: Tokens, email: str = "ana@example.com",
                    role: str = "deployer", password: str | None = PASSWORD) -> dict:
    body = {"email": email, "role": role, **({"password": password} if password else {})}
    response = await client.post("/api/v1/users", json=body, headers=bearer(tokens.admin))
    assert response.status_code == 201, response.text
    return response.json()


async def log_in(client: httpx.AsyncClient, email: str = "ana@example.com",
                 password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_a_user_logs_in_and_gets_a_seven_day_session(
    client: httpx.AsyncClient, tokens: Tokens, settings: Settings
) -> None:
    user = await make_user(client, tokens, email=" Ana@Example.COM ")
    assert user["email"] == "ana@example.com" and user["password"] is None
    response = await log_in(client)
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["token"].startswith("lgt_") and session["session"]["kind"] == "session"
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    me = await client.get("/api/v1/auth/me", headers=bearer(session["token"]))
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "ana@example.com"
    assert me.json()["actor"] == "user:ana@example.com"
    assert me.json()["token"]["role"] == "deployer"
    assert me.json()["user"]["last_login_at"] is not None
    # The password is stored as an argon2id hash, never as itself.
    db = sqlite3.connect(settings.data_dir / "db")  # the unit store's file
    [(stored,)] = db.execute("SELECT password_hash FROM users").fetchall()
    db.close()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_wrong_password_unknown_email_and_disabled_user_get_the_same_answer(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    user = await make_user(client, tokens)
    wrong = await log_in(client, password="not the password at all")
    unknown = await log_in(client, email="nobody@example.com")
    await client.patch(f"/api/v1/users/{user['id']}", json={"disabled": True},
                       headers=bearer(tokens.admin))
    disabled = await log_in(client)
    for response in (wrong, unknown, disabled):
        assert response.status_code == 401
        assert response.json()["code"] == "LOGIN_FAILED"
        assert response.json()["error"] == "invalid email or password"


async def test_login_is_limited_to_five_attempts_a_minute_per_address(
    client: httpx.AsyncClient, tokens: Tokens, platform: Platform
) -> None:
    platform.access.apply({"rate_limits": {"auth": 5}})
    await make_user(client, tokens)
    answers = [await log_in(client, password="wrong password here") for _ in range(5)]
    assert [r.status_code for r in answers] == [401] * 5
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["4", "3", "2", "1", "0"]
    limited = await log_in(client)  # even the right password waits now
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit"] == "5"


async def test_renewing_a_session_ends_the_old_one(client: httpx.AsyncClient,
                                                   tokens: Tokens) -> None:
    await make_user(client, tokens)
    old = (await log_in(client)).json()["token"]
    renewed = await client.post("/api/v1/auth/renew", headers=bearer(old))
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()["token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(old))).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(new))).status_code == 200
    # API tokens are not renewed, and log out is for sessions.
    for path in ("/api/v1/auth/renew", "/api/v1/auth/logout"):
        response = await client.post(path, headers=bearer(tokens.viewer))
        assert response.status_code == 400 and response.json()["code"] == "NOT_A_SESSION"
    out = await client.post("/api/v1/auth/logout", headers=bearer(new))
    assert out.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(new))).status_code == 401


async def test_disabling_a_user_or_lowering_its_role_applies_to_its_tokens_at_once(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    user = await make_user(client, tokens, role="admin")
    session = (await log_in(client)).json()["token"]
    made = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=bearer(session))
    assert made.status_code == 201 and made.json()["role"] == "admin"
    api_token = made.json()["token"]
    lowered = await client.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer"},
                                 headers=bearer(tokens.admin))
    assert lowered.status_code == 200 and lowered.json()["role"] == "viewer"
    me = await client.get("/api/v1/auth/me", headers=bearer(api_token))
    assert me.json()["token"]["role"] == "viewer"
    write = await client.post("/api/v1/services/web/stop", headers=bearer(api_token))
    assert write.status_code == 403
    await client.patch(f"/api/v1/users/{user['id']}", json={"disabled": True},
                       headers=bearer(tokens.admin))
    for token in (session, api_token):
        response = await client.get("/api/v1/auth/me", headers=bearer(token))
        assert response.status_code == 401 and response.json()["code"] == "TOKEN_REVOKED"


async def test_a_user_changes_its_own_password_only_with_the_current_one(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    user = await make_user(client, tokens)
    session = (await log_in(client)).json()["token"]
    new_password = "another long passphrase"
    refused = await client.patch(f"/api/v1/users/{user['id']}", headers=bearer(session),
                                 json={"password": new_password, "current_password": "guess"})
    assert refused.status_code == 403 and refused.json()["code"] == "CURRENT_PASSWORD_WRONG"
    changed = await client.patch(f"/api/v1/users/{user['id']}", headers=bearer(session),
                                 json={"password": new_password, "current_password": PASSWORD})
    assert changed.status_code == 200, changed.text
    assert (await log_in(client)).status_code == 401
    assert (await log_in(client, password=new_password)).status_code == 200
    # Its sessions ended with the change.
    assert (await client.get("/api/v1/auth/me", headers=bearer(session))).status_code == 401
    short = await client.patch(f"/api/v1/users/{user['id']}", headers=bearer(tokens.admin),
                               json={"password": "short"})
    assert short.status_code == 422 and short.json()["code"] == "WEAK_PASSWORD"


async def test_users_see_only_themselves_and_cannot_raise_themselves(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    ana = await make_user(client, tokens)
    bob = await make_user(client, tokens, email="bob@example.com", role="viewer")
    session = (await log_in(client)).json()["token"]
    assert (await client.get(f"/api/v1/users/{ana['id']}", headers=bearer(session))).status_code == 200
    other = await client.get(f"/api/v1/users/{bob['id']}", headers=bearer(session))
    assert other.status_code == 404 and other.json()["code"] == "USER_NOT_FOUND"
    raised = await client.patch(f"/api/v1/users/{ana['id']}", json={"role": "admin"},
                                headers=bearer(session))
    assert raised.status_code == 403
    duplicate = await client.post("/api/v1/users", json={"email": "ANA@example.com"},
                                  headers=bearer(tokens.admin))
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "USER_EXISTS"


async def test_a_user_made_without_a_password_gets_one_shown_once(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    user = await make_user(client, tokens, password=None)
    assert len(user["password"]) >= 20
    assert (await log_in(client, password=user["password"])).status_code == 200
    listed = await client.get("/api/v1/users", headers=bearer(tokens.admin))
    assert all("password" not in u for u in listed.json()["items"])


async def test_deleting_a_user_revokes_its_tokens(client: httpx.AsyncClient,
                                                  tokens: Tokens) -> None:
    user = await make_user(client, tokens)
    session = (await log_in(client)).json()["token"]
    deleted = await client.delete(f"/api/v1/users/{user['id']}", headers=bearer(tokens.admin))
    assert deleted.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(session))).status_code == 401
    assert (await log_in(client)).status_code == 401


# tokens -------------------------------------------------------------------------------------


async def test_tokens_are_self_service_and_never_stronger_or_wider_than_their_maker(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    made = await client.post("/api/v1/api-tokens", json={"name": "mine"},
                             headers=bearer(tokens.viewer))
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "viewer"
    stronger = await client.post("/api/v1/tokens", json={"name": "x", "role": "deployer"},
                                 headers=bearer(tokens.viewer))
    assert stronger.status_code == 403 and stronger.json()["code"] == "ROLE_TOO_HIGH"
    scoped = await client.post("/api/v1/tokens", headers=bearer(tokens.admin), json={
        "name": "shop", "role": "deployer", "projects": ["shop"]})
    wider = await client.post("/api/v1/tokens", json={"name": "y", "projects": ["blog"]},
                              headers=bearer(scoped.json()["token"]))
    assert wider.status_code == 403 and wider.json()["code"] == "TOKEN_SCOPE"
    inherited = await client.post("/api/v1/tokens", json={"name": "z"},
                                  headers=bearer(scoped.json()["token"]))
    assert inherited.status_code == 201 and inherited.json()["projects"] == ["shop"]


async def test_a_token_lists_and_revokes_its_own_tokens_only(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    await make_user(client, tokens)
    ana = (await log_in(client)).json()["token"]
    made = (await client.post("/api/v1/tokens", json={"name": "ana-ci"},
                              headers=bearer(ana))).json()
    listed = await client.get("/api/v1/tokens", headers=bearer(ana))
    assert [t["name"] for t in listed.json()["items"]] == ["ana-ci"]
    assert all("token" not in t for t in listed.json()["items"])
    theirs = await client.get("/api/v1/tokens", headers=bearer(tokens.viewer))
    assert "ana-ci" not in theirs.text
    other = await client.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(tokens.viewer))
    assert other.status_code == 404 and other.json()["code"] == "TOKEN_NOT_FOUND"
    everyone = await client.get("/api/v1/tokens?all=true", headers=bearer(tokens.admin))
    assert "ana-ci" in everyone.text
    refused = await client.get("/api/v1/tokens?all=true", headers=bearer(tokens.deployer))
    assert refused.status_code == 403
    mine = await client.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(ana))
    assert mine.status_code == 200 and mine.json()["revoked_at"] is not None
    gone = await client.get("/api/v1/auth/me", headers=bearer(made["token"]))
    assert gone.status_code == 401 and gone.json()["code"] == "TOKEN_REVOKED"


async def test_active_tokens_per_owner_are_capped(client: httpx.AsyncClient, tokens: Tokens,
                                                  platform: Platform) -> None:
    platform.access.apply({"max_tokens_per_user": 3})
    await make_user(client, tokens)
    session = (await log_in(client)).json()["token"]  # sessions do not count
    made = []
    for index in range(3):
        response = await client.post("/api/v1/tokens", json={"name": f"t{index}"},
                                     headers=bearer(session))
        assert response.status_code == 201, response.text
        made.append(response.json())
    over = await client.post("/api/v1/tokens", json={"name": "t3"}, headers=bearer(session))
    assert over.status_code == 409 and over.json()["code"] == "TOKEN_LIMIT"
    assert over.json()["details"] == {"active": 3, "limit": 3}
    await client.delete(f"/api/v1/tokens/{made[0]['id']}", headers=bearer(session))
    again = await client.post("/api/v1/tokens", json={"name": "t3"}, headers=bearer(session))
    assert again.status_code == 201


async def test_last_used_at_is_recorded(client: httpx.AsyncClient, store: Store,
                                        tokens: Tokens) -> None:
    made = (await client.post("/api/v1/tokens", json={"name": "used"},
                              headers=bearer(tokens.admin))).json()
    assert made["last_used_at"] is None
    assert (await client.get("/api/v1/services", headers=bearer(made["token"]))).status_code == 200
    token = await store.get_token(made["id"])
    assert token.last_used_at is not None
    assert datetime.now(UTC) - token.last_used_at < timedelta(seconds=30)


@pytest.mark.parametrize("days", [30, 90, 180, 365, None])
async def test_token_expiry_choices(client: httpx.AsyncClient, tokens: Tokens,
                                    days: int | None) -> None:
    made = await client.post("/api/v1/tokens", json={"name": "e", "expires_in_days": days},
                             headers=bearer(tokens.admin))
    assert made.status_code == 201
    expires = made.json()["expires_at"]
    if days is None:
        assert expires is None
    else:
        left = datetime.fromisoformat(expires) - datetime.now(UTC)
        assert timedelta(days=days) - timedelta(minutes=1) < left <= timedelta(days=days)
    bad = await client.post("/api/v1/tokens", json={"name": "e", "expires_in_days": 7},
                            headers=bearer(tokens.admin))
    assert bad.status_code == 422

