"""Inbound git webhooks (GitHub, Gitea, GitLab), the pure part: authenticate a delivery and turn
its body into a normalized event. No IO, no network, no database.

Everything returned has been checked: branches are sane git branch names, commits are full
hex object names, repository URLs are clone URLs no git command can mistake for an option.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from legato.errors import ValidationFailed

Provider = Literal["github", "gitea", "gitlab"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitea", "gitlab")

MAX_BRANCH_BYTES = 255
MAX_DELIVERY_ID = 200
_MAX_URL = 2048
_MAX_NAME = 255
_MAX_EVENT = 100

_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
_COMMIT = re.compile(r"[0-9a-fA-F]{40}(?:[0-9a-fA-F]{24})?")
_NULL_COMMIT = re.compile(r"0{40}(?:0{24})?")
_FULL_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+")
_URL_HOST = re.compile(r"[a-z0-9][a-z0-9.-]*|[0-9a-f:.]+")  # a DNS name or an IP (IPv6 unbracketed)
_SCP_URL = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.-]*:[^\s:][^\s]*")
_CLONE_SCHEMES = frozenset({"https", "http", "ssh", "git"})

# check-ref-format forbids ~^:?*[\ ; the shell metacharacters are refused as well because branch
# names travel on into build arguments, environment names and logs, and no real branch needs them.
_BRANCH_FORBIDDEN = frozenset("~^:?*[\\" + "$`;|&<>()'\"!{}")

_HEADER_EVENT: dict[Provider, str] = {
    "github": "X-GitHub-Event",
    "gitea": "X-Gitea-Event",
    "gitlab": "X-Gitlab-Event",
}
_HEADER_DELIVERY: dict[Provider, tuple[str, ...]] = {
    "github": ("X-GitHub-Delivery",),
    "gitea": ("X-Gitea-Delivery",),
    "gitlab": ("X-Gitlab-Event-UUID", "Idempotency-Key"),
}
_GITLAB_KINDS = {
    "Push Hook": "push",
    "push": "push",
    "Tag Push Hook": "tag_push",
    "tag_push": "tag_push",
    "Merge Request Hook": "pull_request",
    "merge_request": "pull_request",
}
_PR_ACTIONS: dict[Provider, dict[str, Literal["opened", "updated", "closed"]]] = {
    "github": {"opened": "opened", "reopened": "opened", "synchronize": "updated", "closed": "closed"},
    "gitea": {"opened": "opened", "reopened": "opened", "synchronized": "updated", "closed": "closed"},
    "gitlab": {
        "open": "opened",
        "reopen": "opened",
        "update": "updated",
        "close": "closed",
        "merge": "closed",
    },
}


@dataclass(frozen=True)
class Push:
    """New commits on a branch."""

    repository: str  # clone URL (https or ssh/clone_url as given)
    full_name: str  # "owner/name" (gitlab: path_with_namespace)
    branch: str  # from refs/heads/<branch>
    commit: str  # the new head commit sha
    pusher: str


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request opened, updated with new commits, or closed."""

    repository: str  # the base repository; the head branch may live in a fork
    full_name: str
    number: int
    action: Literal["opened", "updated", "closed"]  # normalized
    branch: str  # the PR's head branch
    commit: str  # head sha
    base_branch: str
    merged: bool
    sender: str


@dataclass(frozen=True)
class Ignored:
    """A genuine delivery that asks nothing of Legato."""

    event: str
    reason: str


GitEvent = Push | PullRequest | Ignored


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The one value of header `name`, whatever its case; None when absent or given twice differently."""
    wanted = name.lower()
    values = {value for key, value in headers.items() if key.lower() == wanted and isinstance(value, str)}
    # Two different values (a dict with "X-Foo" and "x-foo", or a repeated header) are ambiguous:
    # picking one would let whoever added the other choose, so treat the header as missing.
    return values.pop().strip() if len(values) == 1 else None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _hmac_matches(secret: bytes, body: bytes, given_hex: str) -> bool:
    if not _HEX_SIGNATURE.fullmatch(given_hex):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
    return hmac.compare_digest(expected, given_hex.lower().encode("ascii"))


def _hub_signature_matches(secret: bytes, body: bytes, value: str) -> bool:
    prefix, _, given = value.partition("=")
    return prefix == "sha256" and _hmac_matches(secret, body, given)


def signature_valid(provider: Provider, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the delivery carries a valid signature for `secret` (constant-time compare)."""
    if not secret or provider not in PROVIDERS:
        return False
    key = _utf8(secret)
    if provider == "github":
        value = _header(headers, "X-Hub-Signature-256")
        return value is not None and _hub_signature_matches(key, body, value)
    if provider == "gitea":
        gitea, hub = _header(headers, "X-Gitea-Signature"), _header(headers, "X-Hub-Signature-256")
        if gitea is None and hub is None:
            return False
        # Gitea signs with both headers; a genuine delivery has every signature it carries right.
        return (gitea is None or _hmac_matches(key, body, gitea)) and (
            hub is None or _hub_signature_matches(key, body, hub)
        )
    token = _header(headers, "X-Gitlab-Token")
    if not token:
        return False
    # GitLab sends the secret itself; comparing digests keeps the secret's length out of the timing.
    return hmac.compare_digest(hashlib.sha256(_utf8(token)).digest(), hashlib.sha256(key).digest())


def delivery_id(provider: Provider, headers: Mapping[str, str]) -> str | None:
    """The provider's id of this delivery (for deduplication); None when absent or not a sane id."""
    if provider not in PROVIDERS:
        return None
    for name in _HEADER_DELIVERY[provider]:
        value = _header(headers, name)
        if value is None:
            continue
        if not value or len(value) > MAX_DELIVERY_ID or not value.isprintable():
            return None
        return value
    return None


def valid_branch(name: str) -> bool:
    """Whether git takes `name` as a branch (check-ref-format), with no leading '-' or shell metachars."""
    if not isinstance(name, str) or not name or name.startswith("-") or name in ("@", "HEAD"):
        return False
    # Categories C* and Z* are controls, format characters, surrogates and every kind of space.
    if any(unicodedata.category(ch)[0] in "CZ" or ch in _BRANCH_FORBIDDEN for ch in name):
        return False
    # Counted in UTF-8 bytes: that is what the ref files (and their .lock files) are named with.
    if len(_utf8(name)) > MAX_BRANCH_BYTES:
        return False
    if ".." in name or "@{" in name or "//" in name:
        return False
    if name.startswith("/") or name.endswith(("/", ".")):
        return False
    return not any(part.startswith(".") or part.endswith(".lock") for part in name.split("/"))


def valid_clone_url(url: str) -> bool:
    """Whether `url` is an http(s), ssh, git or scp-like clone URL that no git or ssh reads as an option."""
    if len(url) > _MAX_URL or url.startswith("-") or any(ch.isspace() for ch in url) or not url.isprintable():
        return False
    if _SCP_URL.fullmatch(url):
        return True
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises ValueError when the port is not a number
    except ValueError:
        return False
    # A host or user starting with '-' would reach ssh as an option (CVE-2017-1000117).
    return (
        parts.scheme in _CLONE_SCHEMES
        and bool(_URL_HOST.fullmatch(host))
        and not (parts.username or "").startswith("-")
    )


class _Payload:
    """A decoded webhook body with typed, checked field access; failures name the field."""

    def __init__(self, provider: Provider, data: dict[str, Any]) -> None:
        self.provider = provider
        self.data = data

    def fail(self, field: str, problem: str, value: object = None) -> ValidationFailed:
        """The error to raise for `field`, naming it in the message and in `details`."""
        details: dict[str, Any] = {"provider": self.provider, "field": field}
        if isinstance(value, str | int) and not isinstance(value, bool):
            details["value"] = value[:200] if isinstance(value, str) else value
        message = f"invalid {self.provider} webhook payload: {field} {problem}"
        return ValidationFailed(message, details=details)

    def get(self, field: str) -> Any:
        """The value at dotted path `field`, or None when any step is missing."""
        node: Any = self.data
        for step in field.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(step)
        return node

    def text(self, *fields: str) -> str:
        """The first of `fields` present as a non-empty string; checks it is printable and short."""
        for field in fields:
            value = self.get(field)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise self.fail(field, "must be a string", value)
            if len(value) > _MAX_NAME or not value.isprintable():
                raise self.fail(field, f"must be printable and at most {_MAX_NAME} characters", value)
            return value
        raise self.fail(" or ".join(fields), "is missing")

    def number(self, field: str) -> int:
        """The positive integer at `field` (booleans are not numbers here)."""
        value = self.get(field)
        if value is None:
            raise self.fail(field, "is missing")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.fail(field, "must be a positive integer", value)
        return value

    def commit(self, *fields: str) -> str:
        """The first of `fields` present, as a lower-case 40 or 64 hex digit commit sha."""
        for field in fields:
            value = self.get(field)
            if value is None:
                continue
            if not isinstance(value, str) or not _COMMIT.fullmatch(value):
                raise self.fail(field, "must be a commit sha (40 or 64 hex characters)", value)
            return value.lower()
        raise self.fail(" or ".join(fields), "is missing")

    def branch(self, field: str, value: str | None = None) -> str:
        """The branch at `field` (or `value`, derived from it), checked by `valid_branch`."""
        name = self.text(field) if value is None else value
        if not valid_branch(name):
            raise self.fail(field, "is not a valid branch name", name)
        return name

    def clone_url(self, *fields: str) -> str:
        """The first of `fields` present, checked to be a clone URL."""
        for field in fields:
            url = self.get(field)
            if url is None:
                continue
            if not isinstance(url, str) or not valid_clone_url(url):
                raise self.fail(field, "must be an http(s), ssh or git clone URL", url)
            return url
        raise self.fail(" or ".join(fields), "is missing")

    def full_name(self, field: str) -> str:
        """The repository path at `field`: two or more segments, none of them only dots."""
        name = self.text(field)
        if not _FULL_NAME.fullmatch(name) or any(set(part) == {"."} for part in name.split("/")):
            raise self.fail(field, "must be a repository path like owner/name", name)
        return name


def _decode(provider: Provider, body: bytes) -> _Payload:
    """The body as a JSON object, or ValidationFailed."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise ValidationFailed(
            f"invalid {provider} webhook payload: the body is not JSON "
            "(set the webhook's content type to application/json)",
            details={"provider": provider, "field": "body"},
        ) from exc
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"invalid {provider} webhook payload: the body must be a JSON object",
            details={"provider": provider, "field": "body"},
        )
    return _Payload(provider, data)


def _event_name(provider: Provider, headers: Mapping[str, str], payload: _Payload) -> tuple[str, str]:
    """The event as the provider named it, and its kind: push, tag_push, pull_request, ping or other."""
    header = _HEADER_EVENT[provider]
    given = _header(headers, header)
    if given is not None and (not given or len(given) > _MAX_EVENT or not given.isprintable()):
        raise ValidationFailed(
            f"invalid {provider} webhook: bad {header} header",
            details={"provider": provider, "field": header},
        )
    if provider != "gitlab":
        if given is None:
            raise ValidationFailed(
                f"invalid {provider} webhook: the {header} header is missing",
                details={"provider": provider, "field": header},
            )
        return given, given if given in ("push", "pull_request", "ping") else "other"
    body_kind = payload.get("object_kind")
    from_header = _GITLAB_KINDS.get(given) if given is not None else None
    from_body = _GITLAB_KINDS.get(body_kind) if isinstance(body_kind, str) else None
    if from_header and from_body and from_header != from_body:
        raise payload.fail("object_kind", f"disagrees with the {header} header ({given})", body_kind)
    if given is not None and from_header:
        return given, from_header
    # No header, or one that does not say ("System Hook"): object_kind tells what the body is.
    if isinstance(body_kind, str) and from_body:
        return body_kind, from_body
    if given is not None:
        return given, "other"
    if isinstance(body_kind, str) and body_kind and len(body_kind) <= _MAX_EVENT and body_kind.isprintable():
        return body_kind, "other"
    raise ValidationFailed(
        f"invalid gitlab webhook: neither the {header} header nor object_kind says what the event is",
        details={"provider": provider, "field": header},
    )


def _push(event: str, payload: _Payload) -> GitEvent:
    """A push to a branch, or Ignored for tags, other refs and deletions."""
    provider = payload.provider
    ref = payload.text("ref")
    if ref.startswith("refs/tags/"):
        return Ignored(event, "tag push")
    if not ref.startswith("refs/heads/"):
        return Ignored(event, f"ref {ref} is not a branch")
    after = payload.get("after")
    if payload.get("deleted") is True or (isinstance(after, str) and _NULL_COMMIT.fullmatch(after)):
        return Ignored(event, "branch deleted")
    if provider == "gitlab":
        return Push(
            repository=payload.clone_url("project.git_http_url", "repository.git_http_url"),
            full_name=payload.full_name("project.path_with_namespace"),
            branch=payload.branch("ref", ref.removeprefix("refs/heads/")),
            commit=payload.commit("after", "checkout_sha"),
            pusher=payload.text("user_username"),
        )
    pusher = (
        ("pusher.name", "sender.login")
        if provider == "github"
        else ("pusher.login", "pusher.username", "sender.login")
    )
    return Push(
        repository=payload.clone_url("repository.clone_url"),
        full_name=payload.full_name("repository.full_name"),
        branch=payload.branch("ref", ref.removeprefix("refs/heads/")),
        commit=payload.commit("after"),
        pusher=payload.text(*pusher),
    )


def _pull_request(event: str, payload: _Payload) -> GitEvent:
    """A pull/merge request event, or Ignored for actions that change no code."""
    provider = payload.provider
    if provider == "gitlab":
        given = payload.text("object_attributes.action")
        action = _PR_ACTIONS[provider].get(given)
        if action is None:
            return Ignored(event, f"merge request action {given} is not handled")
        return PullRequest(
            repository=payload.clone_url("project.git_http_url"),
            full_name=payload.full_name("project.path_with_namespace"),
            number=payload.number("object_attributes.iid"),
            action=action,
            branch=payload.branch("object_attributes.source_branch"),
            commit=payload.commit("object_attributes.last_commit.id"),
            base_branch=payload.branch("object_attributes.target_branch"),
            merged=given == "merge",
            sender=payload.text("user.username"),
        )
    given = payload.text("action")
    action = _PR_ACTIONS[provider].get(given)
    if action is None:
        return Ignored(event, f"pull request action {given} is not handled")
    sender = ("sender.login",) if provider == "github" else ("sender.login", "sender.username")
    return PullRequest(
        repository=payload.clone_url("repository.clone_url"),
        full_name=payload.full_name("repository.full_name"),
        number=payload.number("number"),
        action=action,
        branch=payload.branch("pull_request.head.ref"),
        commit=payload.commit("pull_request.head.sha"),
        base_branch=payload.branch("pull_request.base.ref"),
        # Only a close can be a merge; `merged` on other actions is not trusted to mean anything.
        merged=action == "closed" and payload.get("pull_request.merged") is True,
        sender=payload.text(*sender),
    )


def parse_event(provider: Provider, headers: Mapping[str, str], body: bytes) -> GitEvent:
    """The delivery as a normalized event; malformed bodies raise ValidationFailed."""
    if provider not in PROVIDERS:
        raise ValidationFailed(
            f"unknown git provider {provider!r}: use one of {', '.join(PROVIDERS)}",
            details={"provider": provider},
        )
    payload = _decode(provider, body)
    event, kind = _event_name(provider, headers, payload)
    if kind == "push":
        return _push(event, payload)
    if kind == "pull_request":
        return _pull_request(event, payload)
    if kind == "tag_push":
        return Ignored(event, "tag push")
    if kind == "ping":
        return Ignored(event, "ping")
    return Ignored(event, f"event {event} is not handled")
