"""gitevents: webhook signatures per provider, delivery ids, and bodies parsed into checked events."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from legato.errors import ValidationFailed
from legato.gitevents import (
    PROVIDERS,
    Ignored,
    Provider,
    PullRequest,
    Push,
    delivery_id,
    parse_event,
    signature_valid,
    valid_branch,
)

SECRET = "s3cret-webhook-key"
BODY = b'{"ref": "refs/heads/main"}'
SHA = "9f2c1e0b7d6a5c4b3a29180716253443526170ab"
SHA2 = "0123456789abcdef0123456789abcdef01234567"
ZEROS = "0" * 40

# GitHub's published example: https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
GITHUB_VECTOR_SECRET = "It's a Secret to Everybody"
GITHUB_VECTOR_BODY = b"Hello, World!"
GITHUB_VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def hexmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def without(data: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of `data` with the dotted `path` removed."""
    result = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = result
    for step in parents:
        node = node[step]
    del node[last]
    return result


def replaced(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `data` with the dotted `path` set to `value`."""
    result = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = result
    for step in parents:
        node = node[step]
    node[last] = value
    return result


def body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


# --- realistic payloads, trimmed to what matters plus some noise ---------------------------------

GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": SHA2,
    "after": SHA,
    "created": False,
    "deleted": False,
    "forced": False,
    "repository": {
        "id": 1296269,
        "name": "shop",
        "full_name": "acme/shop",
        "clone_url": "https://github.com/acme/shop.git",
        "ssh_url": "git@github.com:acme/shop.git",
        "default_branch": "main",
    },
    "pusher": {"name": "octocat", "email": "octocat@example.com"},
    "sender": {"login": "octocat", "id": 1},
    "head_commit": {"id": SHA, "message": "Fix checkout"},
}

GITHUB_PR: dict[str, Any] = {
    "action": "opened",
    "number": 42,
    "pull_request": {
        "number": 42,
        "state": "open",
        "merged": False,
        "head": {"ref": "feature/cart", "sha": SHA, "repo": {"full_name": "acme/shop"}},
        "base": {"ref": "main", "sha": SHA2, "repo": {"full_name": "acme/shop"}},
    },
    "repository": {"full_name": "acme/shop", "clone_url": "https://github.com/acme/shop.git"},
    "sender": {"login": "octocat"},
}

GITEA_PUSH: dict[str, Any] = {
    "ref": "refs/heads/develop",
    "before": SHA2,
    "after": SHA,
    "compare_url": "http://gitea.local:3000/acme/shop/compare/0123...9f2c",
    "commits": [{"id": SHA, "message": "wip\n"}],
    "repository": {
        "id": 7,
        "full_name": "acme/shop",
        "clone_url": "http://gitea.local:3000/acme/shop.git",
        "ssh_url": "ssh://git@gitea.local:2222/acme/shop.git",
    },
    "pusher": {"id": 1, "login": "alice", "username": "alice", "full_name": "Alice"},
    "sender": {"id": 1, "login": "alice", "username": "alice"},
}

GITEA_PR: dict[str, Any] = {
    "action": "opened",
    "number": 5,
    "pull_request": {
        "id": 17,
        "number": 5,
        "merged": False,
        "head": {"label": "fix/login", "ref": "fix/login", "sha": SHA},
        "base": {"label": "main", "ref": "main", "sha": SHA2},
    },
    "repository": {"full_name": "acme/shop", "clone_url": "http://gitea.local:3000/acme/shop.git"},
    "sender": {"login": "bob", "username": "bob"},
}

GITLAB_PUSH: dict[str, Any] = {
    "object_kind": "push",
    "event_name": "push",
    "before": SHA2,
    "after": SHA,
    "ref": "refs/heads/main",
    "checkout_sha": SHA,
    "user_username": "carol",
    "user_name": "Carol",
    "project": {
        "id": 15,
        "path_with_namespace": "acme/platform/shop",
        "git_http_url": "https://gitlab.example.com/acme/platform/shop.git",
        "git_ssh_url": "git@gitlab.example.com:acme/platform/shop.git",
    },
    "total_commits_count": 1,
}

GITLAB_MR: dict[str, Any] = {
    "object_kind": "merge_request",
    "event_type": "merge_request",
    "user": {"id": 1, "name": "Carol", "username": "carol"},
    "project": {
        "path_with_namespace": "acme/platform/shop",
        "git_http_url": "https://gitlab.example.com/acme/platform/shop.git",
    },
    "object_attributes": {
        "id": 99,
        "iid": 3,
        "action": "open",
        "state": "opened",
        "source_branch": "feature/search",
        "target_branch": "main",
        "last_commit": {"id": SHA, "message": "Add search"},
    },
}

GITHUB_PUSH_HEADERS = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
GITHUB_PR_HEADERS = {"X-GitHub-Event": "pull_request"}
GITEA_PUSH_HEADERS = {"X-Gitea-Event": "push"}
GITEA_PR_HEADERS = {"X-Gitea-Event": "pull_request"}
GITLAB_PUSH_HEADERS = {"X-Gitlab-Event": "Push Hook"}
GITLAB_MR_HEADERS = {"X-Gitlab-Event": "Merge Request Hook"}


# --- signature_valid: github ----------------------------------------------------------------------


def test_github_published_test_vector_validates() -> None:
    assert hexmac(GITHUB_VECTOR_SECRET, GITHUB_VECTOR_BODY) == GITHUB_VECTOR_SIGNATURE.removeprefix("sha256=")
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE}
    assert signature_valid("github", GITHUB_VECTOR_SECRET, GITHUB_VECTOR_BODY, headers)


def test_github_tampered_body_is_rejected() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE}
    assert not signature_valid("github", GITHUB_VECTOR_SECRET, b"Hello, World?", headers)


def test_github_wrong_secret_is_rejected() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE}
    assert not signature_valid("github", "It's a Secret to Nobody", GITHUB_VECTOR_BODY, headers)


def test_github_missing_signature_is_rejected() -> None:
    assert not signature_valid("github", SECRET, BODY, {})
    # The SHA-1 header alone is not enough: only SHA-256 signatures are accepted.
    assert not signature_valid("github", SECRET, BODY, {"X-Hub-Signature": "sha1=" + "0" * 40})


@pytest.mark.parametrize(
    "value",
    [
        GITHUB_VECTOR_SIGNATURE.removeprefix("sha256="),  # no prefix
        "sha1=" + GITHUB_VECTOR_SIGNATURE.removeprefix("sha256="),
        "SHA256=zz" + GITHUB_VECTOR_SIGNATURE[9:],
        GITHUB_VECTOR_SIGNATURE[:-1],  # one hex digit short
        GITHUB_VECTOR_SIGNATURE + "0",
        "sha256=",
        "",
        "sha256=" + "é" * 64,
    ],
)
def test_github_malformed_signature_is_rejected(value: str) -> None:
    headers = {"X-Hub-Signature-256": value}
    assert not signature_valid("github", GITHUB_VECTOR_SECRET, GITHUB_VECTOR_BODY, headers)


def test_github_signature_hex_case_does_not_matter() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + GITHUB_VECTOR_SIGNATURE.removeprefix("sha256=").upper()}
    assert signature_valid("github", GITHUB_VECTOR_SECRET, GITHUB_VECTOR_BODY, headers)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_empty_secret_never_validates(provider: Provider) -> None:
    headers = {
        "X-Hub-Signature-256": "sha256=" + hexmac("", BODY),
        "X-Gitea-Signature": hexmac("", BODY),
        "X-Gitlab-Token": "",
    }
    assert not signature_valid(provider, "", BODY, headers)


def test_unknown_provider_never_validates() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + hexmac(SECRET, BODY)}
    assert not signature_valid("bitbucket", SECRET, BODY, headers)  # type: ignore[arg-type]


# --- signature_valid: gitea -----------------------------------------------------------------------


def test_gitea_signature_without_prefix_validates() -> None:
    assert signature_valid("gitea", SECRET, BODY, {"X-Gitea-Signature": hexmac(SECRET, BODY)})


def test_gitea_accepts_the_hub_signature_it_also_sends() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + hexmac(SECRET, BODY)}
    assert signature_valid("gitea", SECRET, BODY, headers)


def test_gitea_delivery_with_both_signatures_validates() -> None:
    headers = {
        "X-Gitea-Signature": hexmac(SECRET, BODY),
        "X-Hub-Signature-256": "sha256=" + hexmac(SECRET, BODY),
    }
    assert signature_valid("gitea", SECRET, BODY, headers)


def test_gitea_one_wrong_signature_of_two_is_rejected() -> None:
    headers = {
        "X-Gitea-Signature": hexmac("other", BODY),
        "X-Hub-Signature-256": "sha256=" + hexmac(SECRET, BODY),
    }
    assert not signature_valid("gitea", SECRET, BODY, headers)


def test_gitea_tampered_body_is_rejected() -> None:
    headers = {"X-Gitea-Signature": hexmac(SECRET, BODY)}
    assert not signature_valid("gitea", SECRET, BODY + b" ", headers)


def test_gitea_wrong_secret_is_rejected() -> None:
    assert not signature_valid("gitea", SECRET, BODY, {"X-Gitea-Signature": hexmac("other", BODY)})


def test_gitea_missing_signature_is_rejected() -> None:
    assert not signature_valid("gitea", SECRET, BODY, {"X-Gitea-Event": "push"})


@pytest.mark.parametrize(
    "value",
    ["sha256=" + hexmac(SECRET, BODY), hexmac(SECRET, BODY)[:-2], "not-hex-" + "a" * 56, ""],
)
def test_gitea_malformed_signature_is_rejected(value: str) -> None:
    assert not signature_valid("gitea", SECRET, BODY, {"X-Gitea-Signature": value})


# --- signature_valid: gitlab ----------------------------------------------------------------------


def test_gitlab_token_equal_to_the_secret_validates() -> None:
    assert signature_valid("gitlab", SECRET, BODY, {"X-Gitlab-Token": SECRET})


@pytest.mark.parametrize("token", ["wrong", SECRET + "x", SECRET[:-1], SECRET.upper(), ""])
def test_gitlab_wrong_token_is_rejected(token: str) -> None:
    assert not signature_valid("gitlab", SECRET, BODY, {"X-Gitlab-Token": token})


def test_gitlab_missing_token_is_rejected() -> None:
    assert not signature_valid("gitlab", SECRET, BODY, {"X-Gitlab-Event": "Push Hook"})


def test_gitlab_does_not_accept_an_hmac_signature_instead_of_the_token() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + hexmac(SECRET, BODY)}
    assert not signature_valid("gitlab", SECRET, BODY, headers)


# --- headers: any case, any Mapping ---------------------------------------------------------------


@pytest.mark.parametrize("transform", [str.lower, str.upper])
def test_signature_headers_are_found_whatever_their_case(transform: Any) -> None:
    github = {transform("X-Hub-Signature-256"): "sha256=" + hexmac(SECRET, BODY)}
    gitea = {transform("X-Gitea-Signature"): hexmac(SECRET, BODY)}
    gitlab = {transform("X-Gitlab-Token"): SECRET}
    assert signature_valid("github", SECRET, BODY, github)
    assert signature_valid("gitea", SECRET, BODY, gitea)
    assert signature_valid("gitlab", SECRET, BODY, gitlab)


def test_starlette_headers_are_accepted() -> None:
    raw = [
        (b"x-hub-signature-256", ("sha256=" + hexmac(SECRET, BODY)).encode()),
        (b"x-github-event", b"push"),
    ]
    headers = Headers(raw=raw)
    assert signature_valid("github", SECRET, BODY, headers)
    assert parse_event("github", headers, body(GITHUB_PUSH)) == parse_event(
        "github", GITHUB_PUSH_HEADERS, body(GITHUB_PUSH)
    )


def test_a_header_given_twice_with_different_values_is_not_trusted() -> None:
    good = "sha256=" + hexmac(SECRET, BODY)
    bad = "sha256=" + hexmac("attacker", BODY)
    assert not signature_valid(
        "github", SECRET, BODY, {"X-Hub-Signature-256": good, "x-hub-signature-256": bad}
    )
    repeated = Headers(raw=[(b"x-hub-signature-256", bad.encode()), (b"x-hub-signature-256", good.encode())])
    assert not signature_valid("github", SECRET, BODY, repeated)


# --- delivery_id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "header"),
    [
        ("github", "X-GitHub-Delivery"),
        ("gitea", "X-Gitea-Delivery"),
        ("gitlab", "X-Gitlab-Event-UUID"),
        ("gitlab", "Idempotency-Key"),
    ],
)
def test_delivery_id_comes_from_the_providers_header(provider: Provider, header: str) -> None:
    value = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert delivery_id(provider, {header: value}) == value
    assert delivery_id(provider, {header.lower(): value}) == value


def test_gitlab_delivery_id_prefers_the_event_uuid() -> None:
    headers = {"Idempotency-Key": "key-1", "X-Gitlab-Event-UUID": "uuid-1"}
    assert delivery_id("gitlab", headers) == "uuid-1"


def test_delivery_id_of_another_provider_is_not_used() -> None:
    assert delivery_id("github", {"X-Gitea-Delivery": "abc"}) is None
    assert delivery_id("gitea", {"X-GitHub-Delivery": "abc"}) is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_delivery_id_is_none(provider: Provider) -> None:
    assert delivery_id(provider, {}) is None


@pytest.mark.parametrize("value", ["x" * 201, "abc\ndef", "abc\x00", "abc\x7f", "", "   "])
def test_unreasonable_delivery_id_is_none(value: str) -> None:
    assert delivery_id("github", {"X-GitHub-Delivery": value}) is None


def test_delivery_id_of_200_characters_is_accepted() -> None:
    assert delivery_id("gitea", {"X-Gitea-Delivery": "d" * 200}) == "d" * 200


# --- valid_branch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "main",
        "feature/cart",
        "release-1.2.3",
        "dependabot/npm_and_yarn/lodash-4.17.21",
        "renovate/@types-node-20.x",
        "feat/#123",
        "user/JIRA-12_thing+more",
        "fix-ünïcode",
        "a" * 255,
    ],
)
def test_valid_branch_accepts_ordinary_branch_names(name: str) -> None:
    assert valid_branch(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-x",
        "--upload-pack=evil",
        "a..b",
        "a b",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\x7fb",
        "a\u00a0b",  # no-break space
        "a\u200bb",  # zero-width space
        "$(id)",
        "`id`",
        "a;b",
        "a|b",
        "a&b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[0]",
        "a\\b",
        "x.lock",
        "a/x.lock/b",
        "a/",
        "/a",
        "a//b",
        "a.",
        ".a",
        "a/.b",
        "@",
        "a@{1}",
        "HEAD",
        "a" * 256,
        "é" * 128,  # 256 UTF-8 bytes
    ],
)
def test_valid_branch_rejects_what_git_or_a_shell_would_misread(name: str) -> None:
    assert not valid_branch(name)


# --- parse_event: push ----------------------------------------------------------------------------


def test_github_push_is_parsed() -> None:
    assert parse_event("github", GITHUB_PUSH_HEADERS, body(GITHUB_PUSH)) == Push(
        repository="https://github.com/acme/shop.git",
        full_name="acme/shop",
        branch="main",
        commit=SHA,
        pusher="octocat",
    )


def test_gitea_push_is_parsed() -> None:
    assert parse_event("gitea", GITEA_PUSH_HEADERS, body(GITEA_PUSH)) == Push(
        repository="http://gitea.local:3000/acme/shop.git",
        full_name="acme/shop",
        branch="develop",
        commit=SHA,
        pusher="alice",
    )


def test_gitea_pusher_falls_back_to_username() -> None:
    data = without(GITEA_PUSH, "pusher.login")
    event = parse_event("gitea", GITEA_PUSH_HEADERS, body(data))
    assert isinstance(event, Push)
    assert event.pusher == "alice"


def test_gitlab_push_is_parsed() -> None:
    assert parse_event("gitlab", GITLAB_PUSH_HEADERS, body(GITLAB_PUSH)) == Push(
        repository="https://gitlab.example.com/acme/platform/shop.git",
        full_name="acme/platform/shop",
        branch="main",
        commit=SHA,
        pusher="carol",
    )


def test_gitlab_push_uses_checkout_sha_when_after_is_missing() -> None:
    data = replaced(without(GITLAB_PUSH, "after"), "checkout_sha", SHA2)
    event = parse_event("gitlab", GITLAB_PUSH_HEADERS, body(data))
    assert isinstance(event, Push)
    assert event.commit == SHA2


def test_gitlab_event_kind_falls_back_to_object_kind() -> None:
    assert isinstance(parse_event("gitlab", {}, body(GITLAB_PUSH)), Push)
    assert isinstance(parse_event("gitlab", {"X-Gitlab-Event": "System Hook"}, body(GITLAB_PUSH)), Push)
    assert isinstance(parse_event("gitlab", {}, body(GITLAB_MR)), PullRequest)


def test_gitlab_header_contradicting_object_kind_is_rejected() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event("gitlab", GITLAB_PUSH_HEADERS, body(GITLAB_MR))
    assert caught.value.details["field"] == "object_kind"


def test_push_with_a_sha256_repository_is_parsed() -> None:
    sha256 = "ab" * 32
    event = parse_event("github", GITHUB_PUSH_HEADERS, body(replaced(GITHUB_PUSH, "after", sha256)))
    assert isinstance(event, Push)
    assert event.commit == sha256


def test_push_commit_is_normalized_to_lower_case() -> None:
    event = parse_event("github", GITHUB_PUSH_HEADERS, body(replaced(GITHUB_PUSH, "after", SHA.upper())))
    assert isinstance(event, Push)
    assert event.commit == SHA


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/shop.git",
        "ssh://git@gitea.local:2222/acme/shop.git",
        "git://example.com/shop.git",
    ],
)
def test_ssh_and_git_clone_urls_are_kept_as_given(url: str) -> None:
    event = parse_event(
        "github", GITHUB_PUSH_HEADERS, body(replaced(GITHUB_PUSH, "repository.clone_url", url))
    )
    assert isinstance(event, Push)
    assert event.repository == url


# --- parse_event: pull requests -------------------------------------------------------------------


def test_github_pull_request_opened_is_parsed() -> None:
    assert parse_event("github", GITHUB_PR_HEADERS, body(GITHUB_PR)) == PullRequest(
        repository="https://github.com/acme/shop.git",
        full_name="acme/shop",
        number=42,
        action="opened",
        branch="feature/cart",
        commit=SHA,
        base_branch="main",
        merged=False,
        sender="octocat",
    )


@pytest.mark.parametrize(
    ("given", "action"), [("opened", "opened"), ("reopened", "opened"), ("synchronize", "updated")]
)
def test_github_pull_request_actions_are_normalized(given: str, action: str) -> None:
    event = parse_event("github", GITHUB_PR_HEADERS, body(replaced(GITHUB_PR, "action", given)))
    assert isinstance(event, PullRequest)
    assert event.action == action
    assert not event.merged


def test_github_pull_request_merged_vs_closed() -> None:
    closed = replaced(GITHUB_PR, "action", "closed")
    merged = replaced(closed, "pull_request.merged", True)
    closed_event = parse_event("github", GITHUB_PR_HEADERS, body(closed))
    merged_event = parse_event("github", GITHUB_PR_HEADERS, body(merged))
    assert isinstance(closed_event, PullRequest)
    assert isinstance(merged_event, PullRequest)
    assert (closed_event.action, closed_event.merged) == ("closed", False)
    assert (merged_event.action, merged_event.merged) == ("closed", True)


def test_merged_flag_only_counts_on_a_close() -> None:
    data = replaced(replaced(GITHUB_PR, "action", "synchronize"), "pull_request.merged", True)
    event = parse_event("github", GITHUB_PR_HEADERS, body(data))
    assert isinstance(event, PullRequest)
    assert not event.merged


def test_gitea_pull_request_is_parsed() -> None:
    assert parse_event("gitea", GITEA_PR_HEADERS, body(GITEA_PR)) == PullRequest(
        repository="http://gitea.local:3000/acme/shop.git",
        full_name="acme/shop",
        number=5,
        action="opened",
        branch="fix/login",
        commit=SHA,
        base_branch="main",
        merged=False,
        sender="bob",
    )


@pytest.mark.parametrize(
    ("given", "merged", "action", "is_merged"),
    [
        ("reopened", False, "opened", False),
        ("synchronized", False, "updated", False),
        ("closed", False, "closed", False),
        ("closed", True, "closed", True),
    ],
)
def test_gitea_pull_request_actions_are_normalized(
    given: str, merged: bool, action: str, is_merged: bool
) -> None:
    data = replaced(replaced(GITEA_PR, "action", given), "pull_request.merged", merged)
    event = parse_event("gitea", GITEA_PR_HEADERS, body(data))
    assert isinstance(event, PullRequest)
    assert (event.action, event.merged) == (action, is_merged)


def test_gitlab_merge_request_is_parsed() -> None:
    assert parse_event("gitlab", GITLAB_MR_HEADERS, body(GITLAB_MR)) == PullRequest(
        repository="https://gitlab.example.com/acme/platform/shop.git",
        full_name="acme/platform/shop",
        number=3,
        action="opened",
        branch="feature/search",
        commit=SHA,
        base_branch="main",
        merged=False,
        sender="carol",
    )


@pytest.mark.parametrize(
    ("given", "action", "merged"),
    [
        ("open", "opened", False),
        ("reopen", "opened", False),
        ("update", "updated", False),
        ("close", "closed", False),
        ("merge", "closed", True),
    ],
)
def test_gitlab_merge_request_actions_are_normalized(given: str, action: str, merged: bool) -> None:
    event = parse_event(
        "gitlab", GITLAB_MR_HEADERS, body(replaced(GITLAB_MR, "object_attributes.action", given))
    )
    assert isinstance(event, PullRequest)
    assert (event.action, event.merged) == (action, merged)


@pytest.mark.parametrize(
    ("provider", "headers", "data", "path", "given", "reason"),
    [
        (
            "github",
            GITHUB_PR_HEADERS,
            GITHUB_PR,
            "action",
            "labeled",
            "pull request action labeled is not handled",
        ),
        (
            "github",
            GITHUB_PR_HEADERS,
            GITHUB_PR,
            "action",
            "edited",
            "pull request action edited is not handled",
        ),
        (
            "gitea",
            GITEA_PR_HEADERS,
            GITEA_PR,
            "action",
            "label_updated",
            "pull request action label_updated is not handled",
        ),
        (
            "gitlab",
            GITLAB_MR_HEADERS,
            GITLAB_MR,
            "object_attributes.action",
            "approved",
            "merge request action approved is not handled",
        ),
    ],
)
def test_unhandled_pull_request_actions_are_ignored(
    provider: Provider, headers: dict[str, str], data: dict[str, Any], path: str, given: str, reason: str
) -> None:
    event = parse_event(provider, headers, body(replaced(data, path, given)))
    assert isinstance(event, Ignored)
    assert event.reason == reason


# --- parse_event: ignored deliveries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "headers", "data"),
    [
        ("github", GITHUB_PUSH_HEADERS, replaced(GITHUB_PUSH, "ref", "refs/tags/v1.0.0")),
        ("gitea", GITEA_PUSH_HEADERS, replaced(GITEA_PUSH, "ref", "refs/tags/v1.0.0")),
        ("gitlab", GITLAB_PUSH_HEADERS, replaced(GITLAB_PUSH, "ref", "refs/tags/v1.0.0")),
        (
            "gitlab",
            {"X-Gitlab-Event": "Tag Push Hook"},
            replaced(replaced(GITLAB_PUSH, "ref", "refs/tags/v1"), "object_kind", "tag_push"),
        ),
        ("gitlab", {}, replaced(replaced(GITLAB_PUSH, "ref", "refs/tags/v1"), "object_kind", "tag_push")),
    ],
)
def test_tag_push_is_ignored(provider: Provider, headers: dict[str, str], data: dict[str, Any]) -> None:
    event = parse_event(provider, headers, body(data))
    assert isinstance(event, Ignored)
    assert event.reason == "tag push"


@pytest.mark.parametrize(
    ("provider", "headers", "data"),
    [
        ("github", GITHUB_PUSH_HEADERS, replaced(replaced(GITHUB_PUSH, "after", ZEROS), "deleted", True)),
        ("github", GITHUB_PUSH_HEADERS, replaced(GITHUB_PUSH, "deleted", True)),
        ("gitea", GITEA_PUSH_HEADERS, replaced(GITEA_PUSH, "after", ZEROS)),
        (
            "gitlab",
            GITLAB_PUSH_HEADERS,
            replaced(replaced(GITLAB_PUSH, "after", ZEROS), "checkout_sha", None),
        ),
        ("gitlab", GITLAB_PUSH_HEADERS, replaced(GITLAB_PUSH, "after", "0" * 64)),
    ],
)
def test_branch_deletion_is_ignored(
    provider: Provider, headers: dict[str, str], data: dict[str, Any]
) -> None:
    event = parse_event(provider, headers, body(data))
    assert isinstance(event, Ignored)
    assert event.reason == "branch deleted"


def test_push_to_a_ref_that_is_not_a_branch_is_ignored() -> None:
    event = parse_event(
        "github", GITHUB_PUSH_HEADERS, body(replaced(GITHUB_PUSH, "ref", "refs/notes/commits"))
    )
    assert event == Ignored("push", "ref refs/notes/commits is not a branch")


def test_github_ping_is_ignored() -> None:
    data = {"zen": "Keep it logically awesome.", "hook_id": 1, "repository": GITHUB_PUSH["repository"]}
    assert parse_event("github", {"X-GitHub-Event": "ping"}, body(data)) == Ignored("ping", "ping")


@pytest.mark.parametrize(
    ("provider", "headers", "event"),
    [
        ("github", {"X-GitHub-Event": "issues"}, "issues"),
        ("gitea", {"X-Gitea-Event": "create"}, "create"),
        ("gitlab", {"X-Gitlab-Event": "Issue Hook"}, "Issue Hook"),
    ],
)
def test_unknown_events_are_ignored(provider: Provider, headers: dict[str, str], event: str) -> None:
    assert parse_event(provider, headers, b'{"action": "opened"}') == Ignored(
        event, f"event {event} is not handled"
    )


def test_gitlab_unknown_object_kind_without_header_is_ignored() -> None:
    assert parse_event("gitlab", {}, b'{"object_kind": "pipeline"}') == Ignored(
        "pipeline", "event pipeline is not handled"
    )


def test_event_header_is_found_whatever_its_case() -> None:
    assert isinstance(parse_event("github", {"x-github-event": "push"}, body(GITHUB_PUSH)), Push)
    assert isinstance(parse_event("gitea", {"X-GITEA-EVENT": "push"}, body(GITEA_PUSH)), Push)
    assert isinstance(parse_event("gitlab", {"x-gitlab-event": "Push Hook"}, body(GITLAB_PUSH)), Push)


# --- parse_event: malformed deliveries ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"payload=%7B%22ref%22%7D",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"push"',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_body_that_is_not_a_json_object_is_rejected(provider: Provider, raw: bytes) -> None:
    headers = {"X-GitHub-Event": "push", "X-Gitea-Event": "push", "X-Gitlab-Event": "Push Hook"}
    with pytest.raises(ValidationFailed) as caught:
        parse_event(provider, headers, raw)
    assert caught.value.status == 422
    assert caught.value.details["field"] == "body"


@pytest.mark.parametrize(("provider", "header"), [("github", "X-GitHub-Event"), ("gitea", "X-Gitea-Event")])
def test_missing_event_header_is_rejected(provider: Provider, header: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(provider, {}, body(GITHUB_PUSH))
    assert caught.value.details["field"] == header


def test_gitlab_without_header_or_object_kind_is_rejected() -> None:
    with pytest.raises(ValidationFailed):
        parse_event("gitlab", {}, body(without(GITLAB_PUSH, "object_kind")))


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(ValidationFailed):
        parse_event("bitbucket", {}, body(GITHUB_PUSH))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("provider", "headers", "data", "path", "field"),
    [
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH, "ref", "ref"),
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH, "after", "after"),
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH, "repository.clone_url", "repository.clone_url"),
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH, "repository.full_name", "repository.full_name"),
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH, "repository", "repository.clone_url"),
        ("gitea", GITEA_PUSH_HEADERS, GITEA_PUSH, "after", "after"),
        (
            "gitlab",
            GITLAB_PUSH_HEADERS,
            without(GITLAB_PUSH, "checkout_sha"),
            "after",
            "after or checkout_sha",
        ),
        (
            "gitlab",
            GITLAB_PUSH_HEADERS,
            GITLAB_PUSH,
            "project",
            "project.git_http_url or repository.git_http_url",
        ),
        ("gitlab", GITLAB_PUSH_HEADERS, GITLAB_PUSH, "user_username", "user_username"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "number", "number"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "action", "action"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "pull_request.head.ref", "pull_request.head.ref"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "pull_request.head.sha", "pull_request.head.sha"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "pull_request.base", "pull_request.base.ref"),
        ("gitea", GITEA_PR_HEADERS, GITEA_PR, "sender", "sender.login or sender.username"),
        ("gitlab", GITLAB_MR_HEADERS, GITLAB_MR, "object_attributes.iid", "object_attributes.iid"),
        (
            "gitlab",
            GITLAB_MR_HEADERS,
            GITLAB_MR,
            "object_attributes.last_commit",
            "object_attributes.last_commit.id",
        ),
        (
            "gitlab",
            GITLAB_MR_HEADERS,
            GITLAB_MR,
            "object_attributes.target_branch",
            "object_attributes.target_branch",
        ),
        ("gitlab", GITLAB_MR_HEADERS, GITLAB_MR, "user", "user.username"),
    ],
)
def test_missing_field_is_rejected_naming_it(
    provider: Provider, headers: dict[str, str], data: dict[str, Any], path: str, field: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(provider, headers, body(without(data, path)))
    assert caught.value.details["field"] == field
    assert field in caught.value.message


BAD_BRANCHES = ["-x", "a..b", "a b", "$(id)", "main\nInjected: yes", "x.lock", "a~1", "HEAD"]


@pytest.mark.parametrize("branch", BAD_BRANCHES)
@pytest.mark.parametrize(
    ("provider", "headers", "data"),
    [
        ("github", GITHUB_PUSH_HEADERS, GITHUB_PUSH),
        ("gitea", GITEA_PUSH_HEADERS, GITEA_PUSH),
        ("gitlab", GITLAB_PUSH_HEADERS, GITLAB_PUSH),
    ],
)
def test_push_to_a_bad_branch_name_is_rejected(
    provider: Provider, headers: dict[str, str], data: dict[str, Any], branch: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(provider, headers, body(replaced(data, "ref", "refs/heads/" + branch)))
    assert caught.value.details["field"] == "ref"


@pytest.mark.parametrize("branch", BAD_BRANCHES)
@pytest.mark.parametrize(
    ("provider", "headers", "data", "path"),
    [
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "pull_request.head.ref"),
        ("github", GITHUB_PR_HEADERS, GITHUB_PR, "pull_request.base.ref"),
        ("gitea", GITEA_PR_HEADERS, GITEA_PR, "pull_request.head.ref"),
        ("gitlab", GITLAB_MR_HEADERS, GITLAB_MR, "object_attributes.source_branch"),
        ("gitlab", GITLAB_MR_HEADERS, GITLAB_MR, "object_attributes.target_branch"),
    ],
)
def test_pull_request_with_a_bad_branch_name_is_rejected(
    provider: Provider, headers: dict[str, str], data: dict[str, Any], path: str, branch: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(provider, headers, body(replaced(data, path, branch)))
    assert caught.value.details["field"] == path


@pytest.mark.parametrize("commit", ["abc123", SHA[:-1], SHA + "0", "g" * 40, "ab" * 31, 12345, None, ""])
def test_bad_commit_is_rejected(commit: Any) -> None:
    data = replaced(GITHUB_PR, "pull_request.head.sha", commit)
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PR_HEADERS, body(data))
    assert caught.value.details["field"] == "pull_request.head.sha"


@pytest.mark.parametrize("number", [0, -1, "42", 4.2, True, None])
def test_pull_request_number_must_be_a_positive_integer(number: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PR_HEADERS, body(replaced(GITHUB_PR, "number", number)))
    assert caught.value.details["field"] == "number"


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch /tmp/pwned",
        "-oProxyCommand=id",
        "ext::sh -c id",
        "file:///etc/passwd",
        "ssh://-oProxyCommand=id/acme/shop.git",
        "ssh://-user@host/acme/shop.git",
        "git@-oProxyCommand=id:acme/shop.git",
        "https://github.com/acme/shop.git\n--upload-pack=x",
        "https://github.com:notaport/acme/shop.git",
        "https:///acme/shop.git",
        "acme/shop",
        "",
        42,
    ],
)
def test_clone_url_that_git_could_misread_is_rejected(url: Any) -> None:
    data = replaced(GITHUB_PUSH, "repository.clone_url", url)
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PUSH_HEADERS, body(data))
    assert caught.value.details["field"] == "repository.clone_url"


@pytest.mark.parametrize(
    "full_name", ["shop", "../shop", "acme/..", "acme/sh op", "acme/$(id)", "/acme/shop", 7]
)
def test_repository_full_name_must_be_a_path(full_name: Any) -> None:
    data = replaced(GITHUB_PUSH, "repository.full_name", full_name)
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PUSH_HEADERS, body(data))
    assert caught.value.details["field"] == "repository.full_name"


@pytest.mark.parametrize("pusher", ["x" * 256, "evil\x1b[31m", {"nested": 1}])
def test_pusher_must_be_a_short_printable_string(pusher: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PUSH_HEADERS, body(replaced(GITHUB_PUSH, "pusher.name", pusher)))
    assert caught.value.details["field"] == "pusher.name"


def test_nested_field_of_the_wrong_type_is_reported_as_missing() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event("github", GITHUB_PR_HEADERS, body(replaced(GITHUB_PR, "pull_request", "oops")))
    assert caught.value.details["field"] == "pull_request.head.ref"


def test_events_are_frozen() -> None:
    event = parse_event("github", GITHUB_PUSH_HEADERS, body(GITHUB_PUSH))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.branch = "other"  # type: ignore[misc,union-attr]
