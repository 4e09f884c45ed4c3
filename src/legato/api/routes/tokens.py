"""API tokens, self-service (seed 000's `/api-tokens`, also at `/tokens`): anyone makes tokens
for itself, no stronger than itself and no wider in scope; an unscoped admin sees and revokes
every token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from legato.api.access_schemas import TokenCreate, TokenCreated, TokenPublic, token_public
from legato.api.deps import PlatformDep, ScopeRefused, Viewer, error_responses
from legato.api.schemas import Page
from legato.auth import issue_token
from legato.errors import Forbidden
from legato.store.access import TokenNotFound
from legato.store.models import ROLE_RANK, Token

router = APIRouter(tags=["tokens"])


async def create_token(body: TokenCreate, platform: PlatformDep, caller: Viewer) -> TokenCreated:
    """A new token owned by the caller; its plaintext is in this response and nowhere else.
    Its role is at most the caller's; a caller scoped to projects makes tokens within them."""
    role = body.role or caller.role
    if ROLE_RANK[role] > ROLE_RANK[caller.role]:
        raise Forbidden(f"a {caller.role} cannot make a {role} token", code="ROLE_TOO_HIGH",
                        details={"role": role, "caller_role": caller.role})
    projects = tuple(body.projects) or caller.projects
    if caller.scoped and not set(projects) <= set(caller.projects):
        raise ScopeRefused(caller, "a scoped token makes tokens within its own projects")
    token, plaintext = await issue_token(
        platform.store, name=body.name, role=role, expires_in_days=body.expires_in_days,
        projects=projects, user_id=caller.user_id, cap=platform.access.max_tokens_per_user,
        parent=caller,
    )
    return TokenCreated(**token_public(token).model_dump(), token=plaintext)


async def list_tokens(
    platform: PlatformDep, caller: Viewer,
    all_: Annotated[bool, Query(alias="all", description="Every token (unscoped admins)")] = False,
    include_revoked: bool = True,
) -> Page[TokenPublic]:
    """The caller's API tokens (prefix and metadata, never the token), oldest first."""
    if all_:
        if not caller.platform_admin:
            raise ScopeRefused(caller, "listing every token needs an unscoped admin token")
        tokens = await platform.store.list_tokens(include_revoked=include_revoked)
    else:
        tokens = [t for t in await platform.store.list_tokens(
            owned_by=caller.principal, include_revoked=include_revoked) if _may_manage(caller, t)]
    return Page(items=[token_public(t) for t in tokens])


async def revoke_token(token_id: str, platform: PlatformDep, caller: Viewer) -> TokenPublic:
    """Revoke a token (one's own; an unscoped admin: any); it answers 401 from now on."""
    token = await platform.store.get_token(token_id)
    if not _may_manage(caller, token):
        raise TokenNotFound(token_id)
    return token_public(await platform.store.revoke_token(token_id))


def _may_manage(caller: Token, token: Token) -> bool:
    """An unscoped admin manages every token; anyone else the tokens of its own (its user's,
    or, for a token of no user, itself and those it made) that are no stronger and no wider
    than itself."""
    if caller.platform_admin:
        return True
    if token.id == caller.id:
        return True
    own = (token.user_id == caller.user_id if caller.user_id is not None
           else token.user_id is None and token.parent_id == caller.id)
    within = not caller.scoped or (token.scoped and set(token.projects) <= set(caller.projects))
    return own and caller.allows(token.role) and within



for prefix in ("/tokens", "/api-tokens"):
    router.add_api_route(prefix, create_token, methods=["POST"], status_code=201,
                         response_model=TokenCreated, responses=error_responses(409),
                         name=f"create_token{prefix.replace('/', '_').replace('-', '_')}")
    router.add_api_route(prefix, list_tokens, methods=["GET"], response_model=Page[TokenPublic],
                         responses=error_responses(),
                         name=f"list_tokens{prefix.replace('/', '_').replace('-', '_')}")
    router.add_api_route(f"{prefix}/{{token_id}}", revoke_token, methods=["DELETE"],
                         response_model=TokenPublic, responses=error_responses(404),
                         name=f"revoke_token{prefix.replace('/', '_').replace('-', '_')}")
