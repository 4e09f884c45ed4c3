"""The registry client against the real local registry (scripts/registry.sh) and real Docker pushes."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import docker
import httpx
import pytest

from legato.config import Settings
from legato.errors import NotFound, ValidationFailed
from legato.registry import Registry, RegistryImageNotFound, RegistryUnavailable
from tests.integration.harness import TEST_IMAGE, free_port

pytestmark = pytest.mark.integration

ADDRESS = Settings().registry
V2_IMAGE = TEST_IMAGE.replace(":latest", ":v2")
BAD_REPOSITORIES = ["../x", "a;b", "$(id)", "-x", "Web/x", "a//b", "a/", "/a", "a/../b", "a b", "x\n", "",
                    "a" * 256]
BAD_TAGS = ["-x", "a;b", "$(id)", "../x", ".x", "a/b", "x\n", "", "a" * 129]


@dataclass
class Pushed:
    """Images pushed for one test: local references to untag afterwards, digests by reference."""

    project: str
    docker: docker.DockerClient
    digests: dict[str, str] = field(default_factory=dict)

    def push(self, source: str, repository: str, tag: str) -> str:
        """Tag `source` as <registry>/<repository>:<tag>, push it, and return the pushed digest."""
        target = f"{ADDRESS}/{repository}"
        self.docker.images.get(source).tag(target, tag)
        self.digests[f"{target}:{tag}"] = ""
        digest = ""
        for line in self.docker.images.push(target, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
            digest = line.get("aux", {}).get("Digest", digest)
        assert digest.startswith("sha256:")
        self.digests[f"{target}:{tag}"] = digest
        return digest

    def remove_local_tags(self) -> None:
        for reference in self.digests:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self.docker.images.remove(reference, noprune=True)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    client = Registry(ADDRESS)
    try:
        await client.ping()
    except RegistryUnavailable as exc:
        await client.close()
        pytest.fail(f"no registry at {ADDRESS} ({exc.message}); run scripts/registry.sh")
    yield client
    await client.close()


@pytest.fixture
def pushed() -> Iterator[Pushed]:
    """A project of its own with <project>/web:latest and :v2 pushed; untagged locally afterwards."""
    images = Pushed(project=f"itest-{secrets.token_hex(4)}", docker=docker.from_env())
    try:
        images.push(TEST_IMAGE, f"{images.project}/web", "latest")
        images.push(V2_IMAGE, f"{images.project}/web", "v2")
        yield images
    finally:
        images.remove_local_tags()
        images.docker.close()


@pytest.fixture
async def cleaned(pushed: Pushed, registry: Registry) -> AsyncIterator[Pushed]:
    """`pushed`, with every repository it pushed emptied in the registry afterwards."""
    yield pushed
    for repository in {reference.removeprefix(f"{ADDRESS}/").rsplit(":", 1)[0]
                       for reference in pushed.digests}:
        await registry.delete_repository(repository)


def recording(requests: list[httpx.Request]) -> httpx.MockTransport:
    """A transport that only notes what would have been sent."""

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    return httpx.MockTransport(handle)


def created(image: str) -> datetime:
    return datetime.fromisoformat(docker.from_env().images.get(image).attrs["Created"])


async def test_project_images_lists_every_pushed_tag_newest_first(
        registry: Registry, cleaned: Pushed) -> None:
    project = cleaned.project
    cleaned.push(TEST_IMAGE, f"{project}-other/web", "latest")  # shares the prefix, not the project

    images = await registry.project_images(project)

    assert [(image.repository, image.tag) for image in images] == [(f"{project}/web", "v2"),
                                                                  (f"{project}/web", "latest")]
    for image in images:
        digest = cleaned.digests[f"{ADDRESS}/{image.repository}:{image.tag}"]
        assert image.digest == digest
        assert image.reference == f"{ADDRESS}/{project}/web@{digest}"
        assert image.size > 0
        assert image.created_at is not None
    by_tag = {image.tag: image for image in images}
    assert by_tag["latest"].created_at == created(TEST_IMAGE)
    assert by_tag["v2"].created_at == created(V2_IMAGE)
    assert by_tag["latest"].digest != by_tag["v2"].digest


async def test_tags_lists_one_repository_and_nothing_for_an_unknown_one(
        registry: Registry, cleaned: Pushed) -> None:
    tags = await registry.tags(f"{cleaned.project}/web")

    assert [image.tag for image in tags] == ["v2", "latest"]
    assert await registry.tags(f"{cleaned.project}/nothing-here") == []
    assert await registry.project_images(f"itest-none-{secrets.token_hex(4)}") == []


async def test_delete_removes_exactly_that_tag(registry: Registry, cleaned: Pushed) -> None:
    repository = f"{cleaned.project}/web"

    deleted = await registry.delete(repository, "latest")

    assert deleted.tag == "latest"
    assert deleted.digest == cleaned.digests[f"{ADDRESS}/{repository}:latest"]
    assert deleted.size > 0
    assert [image.tag for image in await registry.tags(repository)] == ["v2"]
    async with httpx.AsyncClient() as http:
        gone = await http.get(f"http://{ADDRESS}/v2/{repository}/manifests/{deleted.digest}")
    assert gone.status_code == 404
    with pytest.raises(RegistryImageNotFound):
        await registry.delete(repository, "latest")


async def test_delete_of_a_missing_tag_is_not_found(registry: Registry, cleaned: Pushed) -> None:
    with pytest.raises(RegistryImageNotFound) as missing_tag:
        await registry.delete(f"{cleaned.project}/web", "no-such-tag")
    with pytest.raises(NotFound) as missing_repository:
        await registry.delete(f"{cleaned.project}/no-such-service", "latest")

    assert missing_tag.value.status == 404
    assert missing_tag.value.code == "IMAGE_TAG_NOT_FOUND"
    assert missing_tag.value.details == {"repository": f"{cleaned.project}/web", "tag": "no-such-tag"}
    assert missing_repository.value.code == "IMAGE_TAG_NOT_FOUND"


async def test_delete_also_removes_other_tags_on_the_same_digest(registry: Registry, cleaned: Pushed) -> None:
    repository = f"{cleaned.project}/web"
    cleaned.push(TEST_IMAGE, repository, "alias")  # same image as :latest, so the same manifest

    await registry.delete(repository, "alias")

    assert [image.tag for image in await registry.tags(repository)] == ["v2"]


async def test_delete_repository_removes_every_tag(registry: Registry, cleaned: Pushed) -> None:
    repository = f"{cleaned.project}/web"

    assert await registry.delete_repository(repository) == 2

    assert await registry.tags(repository) == []
    assert await registry.project_images(cleaned.project) == []
    assert await registry.delete_repository(repository) == 0


@pytest.mark.parametrize("repository", BAD_REPOSITORIES)
async def test_invalid_repository_is_refused_before_any_request(repository: str) -> None:
    requests: list[httpx.Request] = []
    client = Registry(ADDRESS, transport=recording(requests))
    try:
        with pytest.raises(ValidationFailed):
            await client.tags(repository)
        with pytest.raises(ValidationFailed):
            await client.delete(repository, "latest")
        with pytest.raises(ValidationFailed):
            await client.delete_repository(repository)
        with pytest.raises(ValidationFailed):
            await client.project_images(repository)
    finally:
        await client.close()
    assert requests == []


@pytest.mark.parametrize("tag", BAD_TAGS)
async def test_invalid_tag_is_refused_before_any_request(tag: str) -> None:
    requests: list[httpx.Request] = []
    client = Registry(ADDRESS, transport=recording(requests))
    try:
        with pytest.raises(ValidationFailed):
            await client.delete("shop/web", tag)
    finally:
        await client.close()
    assert requests == []


async def test_ping_fails_as_unavailable_when_nothing_answers() -> None:
    client = Registry(f"127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(RegistryUnavailable) as down:
            await client.ping()
        with pytest.raises(RegistryUnavailable):
            await client.project_images("shop")
    finally:
        await client.close()

    assert down.value.status == 503
    assert down.value.code == "REGISTRY_UNAVAILABLE"
