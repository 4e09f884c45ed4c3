"""Outbound webhooks: endpoints that subscribe to Legato's events, and their delivery log
(seed 002's webhooks with retries; signatures as Stripe's). Every route needs the deployer
role; a token scoped to projects sees only the endpoints of those projects."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from legato.api import pagination
from legato.api.deps import Deployer, PlatformDep, ScopeRefused, error_responses
from legato.errors import Conflict, ValidationFailed
from legato.outbound.payload import ALL_EVENTS, EVENT_TYPES, ping_payload
from legato.platform import Platform
from legato.store import Token
from legato.store.hooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointNotFound,
)

router = APIRouter(tags=["webhook-endpoints"])
DeliveryStatus = Literal["pending", "succeeded", "failed"]


def _events(value: list[str]) -> list[str]:
    """Known event types, each once, or `["*"]`."""
    found = list(dict.fromkeys(value))
    if not found:
        raise ValueError("give at least one event type, or [\"*\"] for all")
    if ALL_EVENTS in found:
        if len(found) > 1:
            raise ValueError('"*" stands for every event type; give it alone')
        return found
    unknown = [e for e in found if e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; the types are {list(EVENT_TYPES)}"
                         ' or "*"')
    return found


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookEndpointCreate(_In):
    url: str = Field(min_length=1, max_length=2048, description="http(s) URL that receives "
                     "the POSTs; it must resolve to public addresses (or allow-listed ones)")
    events: list[str] = Field(description=f"Event types ({', '.join(EVENT_TYPES)}) or [\"*\"]")
    project: str | None = Field(None, description="Only this project's events (default: all)")
    description: str = Field("", max_length=500)
    active: bool = True

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        return _events(value)


class WebhookEndpointUpdate(_In):
    url: str | None = Field(None, min_length=1, max_length=2048)
    events: list[str] | None = None
    description: str | None = Field(None, max_length=500)
    active: bool | None = None

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _events(value)


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    project: str | None
    description: str
    active: bool
    owner: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(description="The signing secret (whsec_...), shown this once")


class WebhookEndpointPage(BaseModel):
    items: list[WebhookEndpointPublic]
    next_cursor: str | None = None


class WebhookDeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_id: int | None
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    created_at: datetime
    finished_at: datetime | None
    next_attempt_at: datetime | None


class WebhookAttemptPublic(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookDeliveryDetail(WebhookDeliveryPublic):
    payload: dict[str, Any] = Field(description="The body sent, but for its id (the delivery's)")
    attempt_log: list[WebhookAttemptPublic] = Field(description="Every attempt, oldest first")


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryPublic]
    next_cursor: str | None = None


def endpoint_public(endpoint: WebhookEndpoint) -> WebhookEndpointPublic:
    return WebhookEndpointPublic(
        id=endpoint.id, url=endpoint.url, events=list(endpoint.events), project=endpoint.project,
        description=endpoint.description, active=endpoint.active, owner=endpoint.owner,
        created_by=endpoint.created_by, created_at=endpoint.created_at,
        updated_at=endpoint.updated_at)


def delivery_public(delivery: WebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(**_delivery_fields(delivery))


def _delivery_fields(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id, "endpoint_id": delivery.endpoint_id, "event_id": delivery.event_id,
        "event_type": delivery.event_type, "status": delivery.status,
        "attempts": delivery.attempts, "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error, "redelivery_of": delivery.redelivery_of,
        "created_at": delivery.created_at, "finished_at": delivery.finished_at,
        "next_attempt_at": delivery.next_attempt_at,
    }


def _attempt_public(attempt: WebhookAttempt) -> WebhookAttemptPublic:
    return WebhookAttemptPublic(number=attempt.number, at=attempt.at,
                                status_code=attempt.status_code, error=attempt.error,
                                duration_ms=attempt.duration_ms)


def _sees(token: Token, endpoint: WebhookEndpoint) -> bool:
    """A scoped token sees the endpoints of its projects only (an endpoint of every project
    would show it other projects' events)."""
    return not token.scoped or (endpoint.project is not None and token.sees(endpoint.project))


async def _endpoint(platform: Platform, token: Token, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, if the token sees it; else exactly what a missing one answers."""
    endpoint = await platform.store.get_webhook_endpoint(endpoint_id)
    if not _sees(token, endpoint):
        raise WebhookEndpointNotFound(endpoint_id)
    return endpoint


def _active(endpoint: WebhookEndpoint) -> None:
    if not endpoint.active:
        raise Conflict(f"webhook endpoint {endpoint.id} is inactive; activate it first",
                       code="WEBHOOK_ENDPOINT_INACTIVE", details={"id": endpoint.id})


def _cursor(stamp: datetime, item_id: str) -> str:
    return pagination.encode(f"{stamp.isoformat(timespec='microseconds')}|{item_id}")


def _position(cursor: str | None) -> str | None:
    """The "<created_at>|<id>" a cursor stands for, or 422 INVALID_CURSOR."""
    position = pagination.decode(cursor)
    if position is None:
        return None
    stamp, sep, item_id = position.partition("|")
    try:
        datetime.fromisoformat(stamp)
    except ValueError:
        sep = ""
    if not sep or not item_id:
        raise ValidationFailed("invalid cursor", code="INVALID_CURSOR")
    return position


# endpoints ----------------------------------------------------------------------------------


@router.post("/webhook-endpoints", status_code=201, response_model=WebhookEndpointCreated,
             responses=error_responses(404))
async def create_endpoint(body: WebhookEndpointCreate, platform: PlatformDep,
                          token: Deployer) -> WebhookEndpointCreated:
    """Subscribe a URL to events (of one project, or of all). The answer holds the signing
    secret, this once: each delivery carries `Legato-Signature: t=<unix>,v1=<hex
    HMAC-SHA256(secret, "<t>." + body)>`. A URL that reaches a private address is refused
    (422 WEBHOOK_URL_REFUSED) unless an admin allow-listed it."""
    if token.scoped and (body.project is None or not token.sees(body.project)):
        raise ScopeRefused(token, "a token scoped to projects must name one of them as "
                                  "`project`")
    if body.project is not None:
        await platform.store.get_project(body.project)
    await platform.deliverer.check_url(body.url)
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = await platform.store.create_webhook_endpoint(
        url=body.url, events=body.events, project=body.project, description=body.description,
        active=body.active, secret=secret, owner=token.principal, created_by=token.actor)
    return WebhookEndpointCreated(**endpoint_public(endpoint).model_dump(), secret=secret)


@router.get("/webhook-endpoints", response_model=WebhookEndpointPage,
            responses=error_responses())
async def list_endpoints(platform: PlatformDep, token: Deployer,
                         limit: pagination.Limit = 20,
                         cursor: pagination.Cursor = None) -> WebhookEndpointPage:
    """Endpoints, oldest first (never their secrets)."""
    found = await platform.store.list_webhook_endpoints(
        projects=list(token.projects) if token.scoped else None,
        after=_position(cursor), limit=limit + 1)
    page = found[:limit]
    return WebhookEndpointPage(
        items=[endpoint_public(e) for e in page],
        next_cursor=_cursor(page[-1].created_at, page[-1].id) if len(found) > limit else None)


@router.get("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointPublic,
            responses=error_responses(404))
async def get_endpoint(endpoint_id: str, platform: PlatformDep,
                       token: Deployer) -> WebhookEndpointPublic:
    return endpoint_public(await _endpoint(platform, token, endpoint_id))


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpointPublic,
              responses=error_responses(404))
async def update_endpoint(endpoint_id: str, body: WebhookEndpointUpdate, platform: PlatformDep,
                          token: Deployer) -> WebhookEndpointPublic:
    """Change the URL (checked again), the events, the description, or pause/resume it
    (`active`). Deliveries of an inactive endpoint wait; they resume when it is active."""
    await _endpoint(platform, token, endpoint_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "url" in changes:
        await platform.deliverer.check_url(changes["url"])
    endpoint = await platform.store.update_webhook_endpoint(endpoint_id, changes)
    if endpoint.active:
        platform.deliverer.kick()  # waiting deliveries may go now
    return endpoint_public(endpoint)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204,
               responses=error_responses(404))
async def delete_endpoint(endpoint_id: str, platform: PlatformDep, token: Deployer) -> None:
    """Remove the endpoint with its delivery log; nothing more is sent to it."""
    await _endpoint(platform, token, endpoint_id)
    await platform.store.delete_webhook_endpoint(endpoint_id)


@router.post("/webhook-endpoints/{endpoint_id}/ping", status_code=202,
             response_model=WebhookDeliveryPublic, responses=error_responses(404, 409))
async def ping_endpoint(endpoint_id: str, platform: PlatformDep,
                        token: Deployer) -> WebhookDeliveryPublic:
    """Send a `ping` event now (whatever the endpoint subscribes to); follow it in the
    delivery log."""
    endpoint = await _endpoint(platform, token, endpoint_id)
    _active(endpoint)
    delivery = await platform.store.add_webhook_delivery(
        endpoint.id, event_type="ping",
        payload=ping_payload(endpoint.id, endpoint.project, platform.deliverer.clock()))
    platform.deliverer.kick()
    return delivery_public(delivery)


# deliveries ---------------------------------------------------------------------------------


@router.get("/webhook-endpoints/{endpoint_id}/deliveries", response_model=WebhookDeliveryPage,
            responses=error_responses(404))
async def list_deliveries(
    endpoint_id: str, platform: PlatformDep, token: Deployer,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    limit: pagination.Limit = 20, cursor: pagination.Cursor = None,
) -> WebhookDeliveryPage:
    """The endpoint's deliveries, newest first (kept 30 days once finished)."""
    await _endpoint(platform, token, endpoint_id)
    found = await platform.store.list_webhook_deliveries(
        endpoint_id, before=_position(cursor), limit=limit + 1, status=status)
    page = found[:limit]
    return WebhookDeliveryPage(
        items=[delivery_public(d) for d in page],
        next_cursor=_cursor(page[-1].created_at, page[-1].id) if len(found) > limit else None)


@router.get("/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}",
            response_model=WebhookDeliveryDetail, responses=error_responses(404))
async def get_delivery(endpoint_id: str, delivery_id: str, platform: PlatformDep,
                       token: Deployer) -> WebhookDeliveryDetail:
    """One delivery with its payload and every attempt (number, at, status_code, error,
    duration_ms)."""
    await _endpoint(platform, token, endpoint_id)
    delivery = await platform.store.get_webhook_delivery(endpoint_id, delivery_id)
    return WebhookDeliveryDetail(**_delivery_fields(delivery), payload=delivery.payload,
                                 attempt_log=[_attempt_public(a) for a in delivery.attempt_log])


@router.post("/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
             status_code=202, response_model=WebhookDeliveryPublic,
             responses=error_responses(404, 409))
async def redeliver(endpoint_id: str, delivery_id: str, platform: PlatformDep,
                    token: Deployer) -> WebhookDeliveryPublic:
    """Send a delivery's payload again, now, as a new delivery (`redelivery_of` names the
    original; retried like any other)."""
    endpoint = await _endpoint(platform, token, endpoint_id)
    _active(endpoint)
    delivery = await platform.store.redeliver_webhook(endpoint_id, delivery_id)
    platform.deliverer.kick()
    return delivery_public(delivery)
