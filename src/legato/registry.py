"""An async client of the Docker Registry HTTP API v2: list, describe and delete pushed images.

Legato names its images `<registry>/<project>/<service>:<tag>`. Repository names and tags come
from API callers, so both are checked against the registry's grammar before any URL is built.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from legato.errors import LegatoError, NotFound, Unavailable, ValidationFailed

T = TypeVar("T")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
_MANIFEST_LISTS = (DOCKER_MANIFEST_LIST, OCI_INDEX)
# Without these the registry would down-convert to schema 1, whose digest is not the one pushed.
_ACCEPT = ", ".join((*_IMAGE_MANIFESTS, *_MANIFEST_LISTS))

_COMPONENT = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
_COMPONENT_RE = re.compile(_COMPONENT)
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_REPOSITORY = 255  # the registry's own limit on a repository name
_MAX_CONFIG_BYTES = 4 << 20  # image configs are a few KiB; refuse to buffer anything absurd
_PAGE = 100
_PARALLEL = 8
_LINK_NEXT_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class RegistryUnavailable(Unavailable):
    code = "REGISTRY_UNAVAILABLE"


class RegistryImageNotFound(NotFound):
    code = "IMAGE_TAG_NOT_FOUND"

    def __init__(self, repository: str, tag: str) -> None:
        super().__init__(f"image not found: {repository}:{tag}",
                         details={"repository": repository, "tag": tag})


class RegistryFailure(LegatoError):
    """The registry answered, but with an error Legato cannot act on."""

    status = 502
    code = "REGISTRY_ERROR"


@dataclass(frozen=True)
class ImageTag:
    """One tag of one repository, as the registry holds it."""

    repository: str  # "<project>/<service>"
    tag: str
    digest: str  # sha256:... of the manifest
    size: int  # bytes: config + layers as the manifest lists them
    created_at: datetime | None  # from the image config blob's "created"
    reference: str  # "<registry>/<repository>@<digest>"


def validate_repository(repository: str) -> str:
    """Return `repository` if it is lowercase path components joined by `/`; raise otherwise."""
    if len(repository) > _MAX_REPOSITORY or not _REPOSITORY_RE.fullmatch(repository):
        raise ValidationFailed(f"invalid repository name: {repository!r}",
                               details={"repository": repository})
    return repository


def validate_tag(tag: str) -> str:
    """Return `tag` if it is a valid image tag; raise ValidationFailed otherwise."""
    if not _TAG_RE.fullmatch(tag):
        raise ValidationFailed(f"invalid image tag: {tag!r}", details={"tag": tag})
    return tag


def _validate_project(project: str) -> str:
    if not _COMPONENT_RE.fullmatch(project) or len(project) > _MAX_REPOSITORY:
        raise ValidationFailed(f"invalid project name: {project!r}", details={"project": project})
    return project


def _newest_first(images: Iterable[ImageTag]) -> list[ImageTag]:
    """Newest first; images without a creation time last; ties by repository and tag."""
    ordered = sorted(images, key=lambda image: (image.repository, image.tag))
    dated = [image for image in ordered if image.created_at is not None]
    dated.sort(key=lambda image: image.created_at.timestamp() if image.created_at else 0.0, reverse=True)
    return dated + [image for image in ordered if image.created_at is None]


def _parse_created(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)  # Go's RFC 3339 nanoseconds: 3.11 keeps microseconds
    except ValueError:
        return None


def _error_codes(response: httpx.Response) -> list[str]:
    try:
        errors = response.json().get("errors") or []
        return [str(error.get("code", "")) for error in errors if isinstance(error, dict)]
    except (ValueError, AttributeError):
        return []


def _media_type(response: httpx.Response, manifest: dict[str, Any]) -> str:
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return str(response.headers.get("content-type", "")).split(";")[0].strip()


def _digest_of(response: httpx.Response) -> str:
    digest = str(response.headers.get("docker-content-digest", ""))
    if not _DIGEST_RE.fullmatch(digest):
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    return digest


def _size_of(manifest: dict[str, Any]) -> int:
    """config.size + the layers' sizes, as an image manifest lists them."""
    parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return sum(int(part.get("size") or 0) for part in parts if isinstance(part, dict))


def _first_platform(index: dict[str, Any]) -> str | None:
    """The digest of an index's first image manifest, skipping buildx attestations."""
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)
               and _DIGEST_RE.fullmatch(str(entry.get("digest", "")))]
    images = [entry for entry in entries if (entry.get("annotations") or {}).get(
        "vnd.docker.reference.type") != "attestation-manifest"]
    chosen = images or entries
    return str(chosen[0]["digest"]) if chosen else None


class Registry:
    """A registry v2 API at `address` (host:port, plain HTTP), without authentication."""

    def __init__(self, address: str, *, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.address = address
        self._http = httpx.AsyncClient(base_url=f"http://{address}", timeout=timeout_s,
                                       transport=transport)
        self._created: dict[str, datetime | None] = {}  # config digest -> created; immutable
        self._in_flight = asyncio.Semaphore(_PARALLEL)  # listing a project fans out per tag

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def ping(self) -> None:
        """Return if the registry answers GET /v2/ with 200; raise RegistryUnavailable otherwise."""
        response = await self._request("GET", "/v2/")
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"registry at {self.address} answered /v2/ with HTTP {response.status_code}",
                details={"address": self.address, "status": response.status_code})

    async def tags(self, repository: str) -> list[ImageTag]:
        """Every tag of `repository`, newest first; [] if the registry does not know it."""
        validate_repository(repository)
        names: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        while url:
            response = await self._request("GET", url)
            if response.status_code == 404:
                return []
            body = self._json(self._check(response, repository=repository))
            names.extend(tag for tag in body.get("tags") or [] if isinstance(tag, str))  # null once empty
            url = self._next_page(response)
        found = await self._gather(self._describe(repository, tag) for tag in names if _TAG_RE.fullmatch(tag))
        return _newest_first(image for image in found if image)

    async def project_images(self, project: str) -> list[ImageTag]:
        """Every tag of every repository under `<project>/`, newest first."""
        prefix = _validate_project(project) + "/"
        repositories: list[str] = []
        url: str | None = f"/v2/_catalog?n={_PAGE}"
        while url:
            response = await self._request("GET", url)
            body = self._json(self._check(response))
            repositories.extend(name for name in body.get("repositories") or []
                                if isinstance(name, str) and name.startswith(prefix))
            url = self._next_page(response)
        per_repository = await self._gather(
            self.tags(name) for name in repositories if _REPOSITORY_RE.fullmatch(name))
        return _newest_first(image for images in per_repository for image in images)

    async def delete(self, repository: str, tag: str) -> ImageTag:
        """Delete the manifest `repository:tag` points to and return what it was.

        The v2 API deletes by digest only, so any other tag of the same repository on that
        digest goes too. Layers stay on disk until the registry's garbage-collect runs.
        """
        validate_repository(repository)
        validate_tag(tag)
        image = await self._describe(repository, tag)
        if image is None:
            raise RegistryImageNotFound(repository, tag)
        response = await self._request("DELETE", f"/v2/{repository}/manifests/{image.digest}")
        if response.status_code == 404:
            raise RegistryImageNotFound(repository, tag)
        self._check(response, repository=repository, tag=tag)
        return image

    async def delete_repository(self, repository: str) -> int:
        """Delete the manifest of every tag of `repository`; return how many tags were removed."""
        images = await self.tags(repository)
        digests = {image.digest for image in images}

        async def delete_digest(digest: str) -> None:
            response = await self._request("DELETE", f"/v2/{repository}/manifests/{digest}")
            if response.status_code != 404:  # already gone: what we wanted
                self._check(response, repository=repository, digest=digest)

        await self._gather(delete_digest(digest) for digest in digests)
        return len(images)

    async def _describe(self, repository: str, reference: str) -> ImageTag | None:
        """The image `repository:reference` names, or None if the registry has no such tag."""
        response = await self._request("GET", f"/v2/{repository}/manifests/{reference}",
                                       headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        manifest = self._json(self._check(response, repository=repository, tag=reference))
        digest = _digest_of(response)
        if _media_type(response, manifest) in _MANIFEST_LISTS:
            platform = _first_platform(manifest)
            if platform is None:
                manifest = {}
            else:
                inner = await self._request("GET", f"/v2/{repository}/manifests/{platform}",
                                            headers={"Accept": _ACCEPT})
                manifest = {} if inner.status_code == 404 else self._json(
                    self._check(inner, repository=repository, digest=platform))
        return ImageTag(
            repository=repository, tag=reference, digest=digest, size=_size_of(manifest),
            created_at=await self._config_created(repository, manifest),
            reference=f"{self.address}/{repository}@{digest}",
        )

    async def _config_created(self, repository: str, manifest: dict[str, Any]) -> datetime | None:
        config = manifest.get("config")
        if not isinstance(config, dict):
            return None
        digest = str(config.get("digest", ""))
        if not _DIGEST_RE.fullmatch(digest) or int(config.get("size") or 0) > _MAX_CONFIG_BYTES:
            return None
        if digest not in self._created:
            response = await self._request("GET", f"/v2/{repository}/blobs/{digest}",
                                           follow_redirects=True)
            if response.status_code == 404:
                return None
            created = _parse_created(self._json(self._check(response, repository=repository,
                                                            digest=digest)).get("created"))
            if len(self._created) >= 4096:
                self._created.clear()
            self._created[digest] = created
        return self._created[digest]

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            async with self._in_flight:
                return await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"registry at {self.address} did not answer: {exc}",
                                      details={"address": self.address}) from exc

    def _check(self, response: httpx.Response, **details: str) -> httpx.Response:
        if response.is_success:
            return response
        codes = _error_codes(response)
        hint = " (is storage.delete.enabled set?)" if "UNSUPPORTED" in codes else ""
        raise RegistryFailure(
            f"registry answered {response.request.method} {response.request.url.path} with HTTP "
            f"{response.status_code} {','.join(codes)}{hint}".rstrip(),
            details={**details, "status": response.status_code, "codes": codes})

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise RegistryFailure(f"registry sent invalid JSON for {response.request.url.path}") from exc
        if not isinstance(body, dict):
            raise RegistryFailure(f"registry sent unexpected JSON for {response.request.url.path}")
        return body

    def _next_page(self, response: httpx.Response) -> str | None:
        """The next page's path from a Link header, kept on this registry."""
        match = _LINK_NEXT_RE.search(str(response.headers.get("link", "")))
        if not match:
            return None
        target = httpx.URL(match.group(1))
        if target.is_absolute_url and target.host != self._http.base_url.host:
            raise RegistryFailure(f"registry pointed pagination elsewhere: {target}")
        return target.raw_path.decode("ascii")

    @staticmethod
    async def _gather(calls: Iterable[Awaitable[T]]) -> list[T]:
        """Run `calls` concurrently (`_request` bounds what is in flight); results in order."""
        return list(await asyncio.gather(*calls))
