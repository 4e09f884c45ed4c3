"""API tokens: create (shown once), list, revoke. Admin only."""

from __future__ import annotations

from fastapi import APIRouter

from legato.api.deps import Admin, PlatformDep, error_responses
from legato.api.schemas import Page, TokenCreate, TokenCreated, TokenPublic, token_public
from legato.auth import issue_token

router = APIRouter(tags=["tokens"])


@router.post("/tokens", status_code=201, response_model=TokenCreated,
             responses=error_responses())
async def create_token(body: TokenCreate, platform: PlatformDep, _: Admin) -> TokenCreated:
    """A new token; its plaintext is in this response and nowhere else, ever."""
    token, plaintext = await issue_token(
        platform.store, name=body.name, role=body.role, expires_in_days=body.expires_in_days,
        projects=tuple(body.projects),
    )
    return TokenCreated(**token_public(token).model_dump(), token=plaintext)


@router.get("/tokens", response_model=Page[TokenPublic], responses=error_responses())
async def list_tokens(platform: PlatformDep, _: Admin) -> Page[TokenPublic]:
    """Every token's prefix and metadata (never the token)."""
    return Page(items=[token_public(t) for t in await platform.store.list_tokens()])


@router.delete("/tokens/{token_id}", response_model=TokenPublic, responses=error_responses(404))
async def revoke_token(token_id: str, platform: PlatformDep, _: Admin) -> TokenPublic:
    """Revoke a token; it answers 401 from now on."""
    return token_public(await platform.store.revoke_token(token_id))
