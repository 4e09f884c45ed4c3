"""A real `legato server` process for integration tests: its own instance label, data dir and
ports, so tests never touch anything else on the Docker host; everything it made is removed
afterwards, even when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx

from legato.registry import Registry

TEST_IMAGE = "legato-test/busybox:latest"
REGISTRY = "127.0.0.1:5000"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll until `predicate` returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Legato:
    """One server process and what it needs."""

    def __init__(self, data_dir: Path, instance: str | None = None) -> None:
        self.data_dir = data_dir
        self.instance = instance or f"t{secrets.token_hex(4)}"
        self.api_port = free_port()
        self.edge_port = free_port()
        self.token = "lgt_" + secrets.token_urlsafe(32)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"{self.url}/api/v1", timeout=30,
                                headers={"Authorization": f"Bearer {self.token}"})
        # A fresh connection per request, as a browser has per host: a kept-alive connection
        # is served by the HAProxy worker it was opened on, which after a reload knows only
        # the domains that existed then.
        self.edge = httpx.Client(base_url=self.edge_url, timeout=10,
                                 limits=httpx.Limits(max_keepalive_connections=0))
        self.docker = docker.from_env()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LEGATO_DATA_DIR": str(self.data_dir),
            "LEGATO_INSTANCE": self.instance,
            "LEGATO_API_PORT": str(self.api_port),
            "LEGATO_EDGE_HTTP_PORT": str(self.edge_port),
            "LEGATO_EDGE_HOST": "127.0.0.1",
            "LEGATO_BOOTSTRAP_TOKEN": self.token,
            "LEGATO_RESYNC_INTERVAL_S": "2",
            "LEGATO_STATS_INTERVAL_S": "1",
            "LEGATO_AUTOSCALE_INTERVAL_S": "1",
            "LEGATO_GIT_ALLOW_LOCAL": "true",  # tests build from bare repositories on disk
            # Polling and load far beyond any client's: the limits have tests of their own.
            "LEGATO_RATE_LIMITS": json.dumps(dict.fromkeys(
                ("reads", "writes", "bulk", "auth", "webhooks"), 10_000_000)),
        }

    def start(self) -> None:
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "legato.cli.main", "server"], env=self.env,
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200,
                 timeout=30, what="legato server to answer")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill(signal.SIGTERM)
        pidfile = self.data_dir / "edge" / "haproxy.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        label = f"legato.instance={self.instance}"
        for container in self.docker.api.containers(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self.docker.api.remove_container(container["Id"], force=True)
        for volume in self.docker.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
        remove_built_images(self.docker, label)
        self.api.close()
        self.edge.close()

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # conveniences -------------------------------------------------------------------------

    def deploy(self, *services: dict[str, Any]) -> httpx.Response:
        return self.api.post("/deploy", json={"services": list(services)})

    def service(self, name: str) -> dict[str, Any]:
        response = self.api.get(f"/services/{name}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_healthy(self, name: str, count: int, timeout: float = 30) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.service(name)
            replicas = body["replicas"]
            ok = replicas["healthy"] == count and replicas["current"] == count
            return body if (ok and body["status"] == "running") or (ok and count == 0) else None

        return wait_for(ready, timeout=timeout, what=f"{name} to have {count} healthy replicas")

    def get_edge(self, host: str, path: str = "/") -> httpx.Response:
        return self.edge.get(path, headers={"Host": host})

    def events(self, name: str, type_: str | None = None) -> list[dict[str, Any]]:
        params = {"type": type_} if type_ else {}
        items: list[dict[str, Any]] = self.api.get(f"/services/{name}/events",
                                                   params=params).json()["items"]
        return items

    def containers(self, service: str) -> list[Any]:
        """The service's containers as Docker sees them (skipping any removed meanwhile)."""
        labels = [f"legato.instance={self.instance}", f"legato.service={service}"]
        found = []
        for summary in self.docker.api.containers(all=True, filters={"label": labels}):
            with contextlib.suppress(docker.errors.NotFound):
                found.append(self.docker.containers.get(summary["Id"]))
        return found


def remove_built_images(client: docker.DockerClient, label: str) -> None:
    """Images a server built (labelled with its instance): from the registry and locally."""
    repositories = set()
    for image in client.api.images(filters={"label": label}):
        for tag in image.get("RepoTags") or []:
            reference = tag.rpartition(":")[0]
            if reference.startswith(f"{REGISTRY}/"):
                repositories.add(reference.removeprefix(f"{REGISTRY}/"))
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_image(image["Id"], force=True)
    if repositories:
        asyncio.run(_delete_repositories(sorted(repositories)))


async def _delete_repositories(repositories: list[str]) -> None:
    registry = Registry(REGISTRY)
    try:
        for repository in repositories:
            with contextlib.suppress(Exception):
                await registry.delete_repository(repository)
    finally:
        await registry.close()


def service_spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "port": 8080,
        "replicas": 1,
        "health_check": {"path": "/healthz", "interval_s": 1, "timeout_s": 1,
                         "failure_threshold": 2},
    }
    spec.update(overrides)
    return spec


@contextlib.contextmanager
def running_legato(data_dir: Path) -> Iterator[Legato]:
    legato = Legato(data_dir)
    try:
        legato.start()
        yield legato
    except BaseException:
        print(legato.log_tail(), file=sys.stderr)
        raise
    finally:
        legato.close()


class GitRepo:
    """A bare repository on disk and a work tree that commits and pushes to it; its Dockerfile
    builds FROM the local test image (nothing can be pulled here)."""

    DOCKERFILE = (
        "FROM legato-test/busybox:latest\n"
        "ARG GREETING=plain\n"
        "COPY site/ /www/\n"
        'RUN echo "$GREETING" > /www/greeting\n'
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )

    def __init__(self, root: Path) -> None:
        self.bare = root / "app.git"
        self.work = root / "work"
        self._git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        self._git("clone", str(self.bare), str(self.work), cwd=root)
        self._git("symbolic-ref", "HEAD", "refs/heads/main")

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}
        done = subprocess.run(["git", *args], cwd=cwd or self.work, env=env, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip()

    def commit(self, files: dict[str, str], *, branch: str = "main", message: str = "change") -> str:
        """Write `files`, commit them on `branch` and push; the new commit's sha."""
        if self._git("symbolic-ref", "--short", "HEAD") != branch:
            existing = self._git("branch", "--list", branch)
            self._git("checkout", *(["-b"] if not existing else []), branch)
        for path, text in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self._git("add", "-A")
        self._git("commit", "-m", message, "--allow-empty")
        self._git("push", "origin", branch)
        return self._git("rev-parse", "HEAD")

    def app(self, version: str, *, branch: str = "main") -> str:
        """A commit of the test app whose index answers `version`."""
        return self.commit({"Dockerfile": self.DOCKERFILE, "site/index.html": f"{version}\n",
                            "site/healthz": "ok\n"}, branch=branch, message=version)
