"""Source builds: clone, `docker build`, push to the registry; the result is the exact digest a
deployment then runs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors

from legato.build import git
from legato.build.log import BuildLog
from legato.errors import LegatoError


class BuildFailed(LegatoError):
    status = 422
    code = "BUILD_FAILED"


@dataclass(frozen=True)
class BuildRequest:
    deployment: str
    project: str
    service: str
    repository: str
    branch: str
    dockerfile: str = "Dockerfile"
    context: str = "."
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    image: str  # <registry>/<project>/<service>@<digest>: what the deployment runs
    tag: str  # <registry>/<project>/<service>:<commit>
    digest: str
    commit: str
    seconds: dict[str, float]  # clone, build, push

    def record(self) -> dict[str, Any]:
        return {"image": self.image, "tag": self.tag, "digest": self.digest,
                "commit": self.commit, "seconds": self.seconds}




class Builder(Protocol):
    """Turns a repository into an image in the registry."""

    async def build(self, request: BuildRequest, log: BuildLog,
                    step: Callable[[str], Any]) -> BuildResult: ...

    async def remove_images(self, repository: str) -> int: ...

    async def close(self) -> None: ...


class DockerBuilder:
    """Clones with git, builds with the Docker Engine (its layer cache makes a rebuild of an
    unchanged Dockerfile fast), pushes to the registry."""

    def __init__(self, *, registry: str, docker_host: str, workdir: Path, allow_local: bool,
                 git_timeout_s: float, build_timeout_s: float) -> None:
        self.registry = registry
        self._docker_host = docker_host or "unix:///var/run/docker.sock"
        self._api: docker.APIClient | None = None
        self.workdir = workdir
        self.allow_local = allow_local
        self.git_timeout_s = git_timeout_s
        self.build_timeout_s = build_timeout_s

    @property
    def api(self) -> docker.APIClient:
        if self._api is None:  # made on first use: most installations never build
            self._api = docker.APIClient(base_url=self._docker_host, version="auto",
                                         timeout=self.build_timeout_s)
        return self._api

    async def build(self, request: BuildRequest, log: BuildLog,
                    step: Callable[[str], Any]) -> BuildResult:
        seconds: dict[str, float] = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{request.deployment}-", dir=self.workdir))
        try:
            await step("cloning")
            started = time.monotonic()
            log.write(f"$ git clone --depth 1 --branch {request.branch} {request.repository}")
            source = scratch / "src"
            try:
                commit = await git.clone(request.repository, request.branch, source,
                                         allow_local=self.allow_local,
                                         timeout_s=self.git_timeout_s, output=log.write)
            except LegatoError as exc:
                raise BuildFailed(f"clone failed: {exc.message}\n{log.tail()}") from exc
            seconds["clone"] = round(time.monotonic() - started, 3)
            log.write(f"checked out {commit}")

            context = _inside(source, request.context, "context")
            dockerfile = _inside(context, request.dockerfile, "dockerfile")
            if not dockerfile.is_file():
                raise BuildFailed(f"no Dockerfile at {request.dockerfile} in {request.context} "
                                  "(POST /projects/{p}/analyze can generate one)")
            repository = f"{self.registry}/{request.project}/{request.service}"
            tag = f"{repository}:{commit[:12]}"

            await step("building")
            started = time.monotonic()
            log.write(f"$ docker build -f {request.dockerfile} -t {tag} {request.context}")
            loop = asyncio.get_running_loop()
            emit = _threadsafe(loop, log)
            try:
                image_id = await asyncio.wait_for(asyncio.to_thread(
                    self._docker_build, context, dockerfile.relative_to(context).as_posix(), tag,
                    request, emit), timeout=self.build_timeout_s)
            except TimeoutError:
                raise BuildFailed(f"build timed out after {self.build_timeout_s:g}s") from None
            seconds["build"] = round(time.monotonic() - started, 3)

            await step("pushing")
            started = time.monotonic()
            log.write(f"$ docker push {tag}")
            digest = await asyncio.to_thread(self._docker_push, repository, commit[:12], emit)
            seconds["push"] = round(time.monotonic() - started, 3)
            log.write(f"pushed {repository}@{digest} (image {image_id[:19]})")
            return BuildResult(image=f"{repository}@{digest}", tag=tag, digest=digest,
                               commit=commit, seconds=seconds)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _docker_build(self, context: Path, dockerfile: str, tag: str, request: BuildRequest,
                      emit: Callable[[str], None]) -> str:
        image_id = ""
        try:
            for chunk in _chunks(self.api.build(
                path=str(context), dockerfile=dockerfile, tag=tag, buildargs=request.args,
                labels=request.labels, rm=True, forcerm=True, pull=False, decode=True,
            )):
                if "stream" in chunk:
                    emit(str(chunk["stream"]))
                if "error" in chunk:
                    emit(str(chunk["error"]))
                    raise BuildFailed(f"docker build failed: {str(chunk['error']).strip()}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise BuildFailed(f"docker build failed: {exc.explanation or exc}") from exc
        if not image_id:
            image_id = str(self.api.inspect_image(tag)["Id"])
        return image_id

    def _docker_push(self, repository: str, tag: str, emit: Callable[[str], None]) -> str:
        digest = ""
        try:
            for chunk in _chunks(self.api.push(repository, tag=tag, stream=True, decode=True)):
                if "error" in chunk:
                    raise BuildFailed(f"push to {self.registry} failed: {chunk['error']}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "Digest" in aux:
                    digest = str(aux["Digest"])
                elif chunk.get("status") and "id" not in chunk:
                    emit(str(chunk["status"]))
        except docker.errors.APIError as exc:
            raise BuildFailed(f"push to {self.registry} failed: {exc.explanation or exc}") from exc
        if not digest:
            raise BuildFailed(f"push to {self.registry} reported no digest")
        return digest

    async def remove_images(self, repository: str) -> int:
        """Delete the local images of `<registry>/<repository>` (every tag); how many."""
        reference = f"{self.registry}/{repository}"

        def remove() -> int:
            removed = 0
            for image in self.api.images(name=reference):
                for tag in image.get("RepoTags") or []:
                    if tag.rpartition(":")[0] == reference:
                        self.api.remove_image(tag, noprune=False)
                        removed += 1
                for digest in image.get("RepoDigests") or []:
                    if digest.partition("@")[0] == reference:
                        with contextlib.suppress(docker.errors.NotFound):
                            self.api.remove_image(digest, noprune=False)
            return removed

        return await asyncio.to_thread(remove)

    async def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _chunks(stream: Any) -> Iterator[dict[str, Any]]:
    for chunk in stream:
        if isinstance(chunk, dict):
            yield chunk


def _inside(root: Path, relative: str, what: str) -> Path:
    """`root/relative`, refused if it leaves `root` (through .. or a symlink)."""
    path = (root / relative).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise BuildFailed(f"{what} {relative!r} leaves the repository")
    return path


def _threadsafe(loop: asyncio.AbstractEventLoop, log: BuildLog) -> Callable[[str], None]:
    def emit(text: str) -> None:
        if text.strip():
            loop.call_soon_threadsafe(log.write, text)
    return emit
