"""Git webhooks: registration (token required) and deliveries from GitHub, Gitea and GitLab
(authenticated by their signature, not a token; SPEC §3)."""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter, Request

from legato.api.deps import Deployer, PlatformAdmin, PlatformDep, error_responses, require_project
from legato.api.schemas import (
    DeliveryResult,
    KeyRotation,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
)
from legato.errors import NotFound, ValidationFailed
from legato.gitops import public

router = APIRouter(tags=["webhooks"])
MAX_BODY = 5 * 1024 * 1024  # GitHub caps payloads at 25 MB; pushes are far smaller


@router.get("/webhooks", response_model=list[WebhookPublic], responses=error_responses())
async def list_webhooks(platform: PlatformDep, token: Deployer,
                        project: str | None = None) -> list[WebhookPublic]:
    """Registered webhooks (never their secrets)."""
    return [WebhookPublic(**public(h)) for h in await platform.store.list_webhooks(
        project=project) if token.sees(h.project)]


@router.post("/webhooks", status_code=201, response_model=WebhookCreated,
             responses=error_responses(404))
async def create_webhook(body: WebhookCreate, platform: PlatformDep,
                         token: Deployer) -> WebhookCreated:
    """Register a webhook for a project; the secret (given, or made here) is shown once.
    Configure the git host to POST to `url` with it (content type application/json)."""
    require_project(token, body.project)
    secret = body.secret or secrets.token_urlsafe(32)
    hook = await platform.store.create_webhook(body.project, body.provider, secret)
    return WebhookCreated(**public(hook), secret=secret)


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=error_responses(404))
async def delete_webhook(webhook_id: str, platform: PlatformDep, token: Deployer) -> None:
    if token.scoped and not any(h.id == webhook_id and token.sees(h.project)
                                for h in await platform.store.list_webhooks()):
        raise NotFound(f"webhook not found: {webhook_id}", code="WEBHOOK_NOT_FOUND",
                       details={"id": webhook_id})
    await platform.store.delete_webhook(webhook_id)


@router.post("/webhooks/{provider}", response_model=DeliveryResult,
             responses=error_responses(413), openapi_extra={"security": []})
async def receive(provider: Literal["github", "gitea", "gitlab"], request: Request,
                  platform: PlatformDep) -> DeliveryResult:
    """A delivery from the git host, authenticated by its signature (GitHub
    `X-Hub-Signature-256`, Gitea `X-Gitea-Signature`, GitLab `X-Gitlab-Token`). A push to an
    environment's branch deploys it; a pull request opens, updates or removes its preview
    environment `pr-<n>`. A replayed delivery id does nothing; a bad signature is a 401 and
    nothing is queued. Answers at once: builds run afterwards."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ValidationFailed("payload too large", code="PAYLOAD_TOO_LARGE", status=413)
    result = await platform.gitops.receive(provider, request.headers, body)
    return DeliveryResult(delivery=result.delivery, project=result.project, event=result.event,
                          status=result.status, reason=result.reason,
                          deployments=result.deployments)


@router.post("/keys/rotate", response_model=KeyRotation, responses=error_responses(),
             tags=["keys"])
async def rotate_keys(platform: PlatformDep, _: PlatformAdmin) -> KeyRotation:
    """A new data key; every stored value is re-encrypted under it and the old keys deleted."""
    return KeyRotation(**await platform.store.rotate_keys())
