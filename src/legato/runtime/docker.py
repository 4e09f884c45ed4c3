"""Docker Engine runtime, through the docker SDK's low-level client.

Every SDK call blocks, so each runs on a dedicated thread pool (wide enough to start many
replicas in parallel); the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import docker
import docker.errors

from legato.errors import ImageNotFound, RuntimeFailure
from legato.runtime import cgroups
from legato.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_ENVIRONMENT,
    LABEL_INSTANCE,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    LogLine,
    Replica,
    ReplicaRequest,
    ReplicaStats,
    RuntimeEvent,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_POOL = 32
_LABEL_VOLUME = "legato.volume"
LABEL_HOST_PORT = "legato.host-port"  # the port of a replica on the host network


class DockerRuntime:
    """Replicas as containers on one Docker Engine."""

    name = "docker"

    def __init__(self, instance: str, base_url: str = "") -> None:
        self.instance = instance
        self._api = docker.APIClient(
            base_url=base_url or "unix:///var/run/docker.sock", version="auto",
            timeout=120, max_pool_size=_POOL,
        )
        self._pool = ThreadPoolExecutor(_POOL, thread_name_prefix="docker")
        self._inspected: dict[tuple[str, str], Replica] = {}
        self._pids: dict[str, int] = {}  # running container -> its init process on this host
        # A daemon on this machine: its containers' counters are read from their cgroups.
        self._local = (not base_url or base_url.startswith("unix://")) and cgroups.CGROUP.is_dir()
        self._cgroups = cgroups.CgroupReader()
        try:
            self.node = str(self._api.info().get("Name", "local"))
        except Exception as exc:
            raise RuntimeFailure(
                f"cannot reach the Docker Engine at {base_url or 'unix:///var/run/docker.sock'}:"
                f" {exc}"
            ) from exc

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise RuntimeFailure(f"docker: {exc.explanation or exc}") from exc
        except Exception as exc:  # requests' connection errors and friends
            if isinstance(exc, RuntimeFailure | ImageNotFound):
                raise
            raise RuntimeFailure(f"docker: {exc}") from exc

    async def ping(self) -> None:
        await self._call(self._api.ping)

    async def resolve_image(self, reference: str) -> str:
        try:
            image = await self._call(self._api.inspect_image, reference)
        except docker.errors.NotFound:
            try:
                await self._call(self._api.pull, reference)
                image = await self._call(self._api.inspect_image, reference)
            except (docker.errors.NotFound, RuntimeFailure) as exc:
                reason = exc.message if isinstance(exc, RuntimeFailure) else "no such image"
                raise ImageNotFound(reference, reason.removeprefix("docker: ")) from exc
        return str(image["Id"])

    async def start_replica(self, request: ReplicaRequest) -> Replica:
        name = f"lg-{self.instance}-{request.service}-{request.slot}-{secrets.token_hex(3)}"
        labels = {
            **request.labels,
            LABEL_INSTANCE: self.instance,
            LABEL_SERVICE: request.service,
            LABEL_PROJECT: request.project,
            LABEL_ENVIRONMENT: request.environment,
            LABEL_DEPLOYMENT: request.deployment,
            LABEL_REPLICA: str(request.slot),
        }
        binds = {}
        for volume, path in request.volumes.items():
            full = self.volume_name(request.service, volume)
            await self._call(
                self._api.create_volume, full,
                labels={LABEL_INSTANCE: self.instance, LABEL_SERVICE: request.service,
                        _LABEL_VOLUME: volume},
            )
            binds[full] = {"bind": path, "mode": "rw"}
        for host_path, path, read_only in request.binds:
            binds[host_path] = {"bind": path, "mode": "ro" if read_only else "rw"}
        if request.host_network:  # no ports to publish: the replica listens on the host's
            labels[LABEL_HOST_PORT] = str(request.port)
        host_config = self._api.create_host_config(
            port_bindings=None if request.host_network else {request.port: ("127.0.0.1", None)},
            binds=binds or None,
            init=True,
            mem_limit=request.memory_bytes,
            nano_cpus=int(request.cpus * 1e9) if request.cpus else None,
            log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
            privileged=request.privileged,
            cap_add=list(request.cap_add) or None,
            devices=list(request.devices) or None,
            network_mode="host" if request.host_network else None,
            pid_mode="host" if request.host_pid else None,
        )
        try:
            created = await self._call(
                self._api.create_container,
                request.image,
                command=list(request.command) if request.command else None,
                name=name,
                labels=labels,
                environment=dict(request.env),
                ports=None if request.host_network else [request.port],
                host_config=host_config,
            )
        except docker.errors.NotFound as exc:
            raise ImageNotFound(request.image) from exc
        container_id = created["Id"]
        try:
            await self._call(self._api.start, container_id)
        except (RuntimeFailure, docker.errors.NotFound):
            with contextlib.suppress(Exception):
                await self._call(self._api.remove_container, container_id, force=True)
            raise
        return await self._inspect(container_id)

    async def _inspect(self, container_id: str) -> Replica:
        data = await self._call(self._api.inspect_container, container_id)
        replica = _replica_from_inspect(data, self.node)
        self._inspected[(replica.id, replica.state)] = replica
        pid = int(data["State"].get("Pid") or 0)
        if replica.running and pid > 0:
            self._pids[replica.id] = pid
        else:
            self._pids.pop(replica.id, None)
        return replica

    async def list_replicas(self, service: str | None = None) -> list[Replica]:
        labels = [f"{LABEL_INSTANCE}={self.instance}"]
        if service:
            labels.append(f"{LABEL_SERVICE}={service}")
        summaries = await self._call(self._api.containers, all=True, filters={"label": labels})
        keys = [(s["Id"], s["State"]) for s in summaries]
        missing = [cid for cid, state in keys if (cid, state) not in self._inspected]
        if missing:
            results = await asyncio.gather(*(self._inspect(cid) for cid in missing),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, docker.errors.NotFound
                ):
                    raise result
        if service is None:
            live = set(keys)
            for key in list(self._inspected):
                if key not in live:
                    del self._inspected[key]
            running = {cid for cid, state in keys if state == "running"}
            self._pids = {k: v for k, v in self._pids.items() if k in running}
        return [self._inspected[k] for k in keys if k in self._inspected]

    async def stop_replica(self, replica_id: str, timeout_s: float = 10) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await self._call(self._api.stop, replica_id, timeout=int(timeout_s))

    async def resume_replica(self, replica_id: str) -> Replica:
        await self._call(self._api.start, replica_id)
        return await self._inspect(replica_id)

    async def stats(self, replica_ids: Sequence[str]) -> dict[str, ReplicaStats]:
        """Local containers' counters come from their cgroups, all read in one job on one
        thread (50 jobs at once cost 8 times the CPU, in thread switches); the rest, and any
        that fails there, from Docker's stats API."""
        local = [(i, self._pids[i]) for i in replica_ids if self._local and i in self._pids]
        found: dict[str, ReplicaStats] = {}
        if local:
            loop = asyncio.get_running_loop()
            read = await loop.run_in_executor(self._pool, self._cgroups.read_all, local)
            for replica_id, result in read.items():
                if isinstance(result, Exception):  # stopped meanwhile, another layout
                    log.debug("cgroup stats of %s: %s; asking Docker", replica_id[:12], result)
                else:
                    found[replica_id] = result
        rest = [i for i in replica_ids if i not in found]
        limit = asyncio.Semaphore(8)

        async def ask(replica_id: str) -> ReplicaStats | None:
            async with limit:
                try:
                    raw = await self._call(self._api.stats, replica_id, stream=False,
                                           one_shot=True)
                except docker.errors.NotFound:
                    return None
            return _stats_from_api(replica_id, cast(dict[str, Any], raw))

        for replica_id, stats in zip(rest, await asyncio.gather(*(ask(i) for i in rest)),
                                     strict=True):
            if stats is not None:
                found[replica_id] = stats
        return found

    async def remove_replica(self, replica_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await self._call(self._api.remove_container, replica_id, force=True)
        for key in [k for k in self._inspected if k[0] == replica_id]:
            del self._inspected[key]
        self._pids.pop(replica_id, None)

    def volume_name(self, service: str, volume: str) -> str:
        return f"lg-{self.instance}-{service}-{volume}"

    async def remove_volumes(self, service: str) -> int:
        found = await self._call(
            self._api.volumes,
            filters={"label": [f"{LABEL_INSTANCE}={self.instance}", f"{LABEL_SERVICE}={service}"]},
        )
        removed = 0
        for volume in found.get("Volumes") or []:
            with contextlib.suppress(docker.errors.NotFound):
                await self._call(self._api.remove_volume, volume["Name"], force=True)
                removed += 1
        return removed

    async def logs(
        self,
        replica: Replica,
        *,
        tail: int | None,
        since: datetime | None,
        follow: bool,
    ) -> AsyncIterator[LogLine]:
        options: dict[str, Any] = {"timestamps": True, "tail": "all" if tail is None else tail}
        if since is not None:
            options["since"] = since.timestamp()  # a float keeps sub-second precision
        try:
            if not follow:
                raw = await self._call(self._api.logs, replica.id, stream=False, **options)
                for line in cast(bytes, raw).decode(errors="replace").splitlines():
                    yield _log_line(replica.name, line)
                return
            stream = await self._call(self._api.logs, replica.id, stream=True, follow=True,
                                      **options)
        except docker.errors.NotFound:
            return  # removed meanwhile: it has no more lines
        async for chunk in self._drain(stream):
            for line in chunk.decode(errors="replace").splitlines():
                yield _log_line(replica.name, line)

    async def _drain(self, stream: Any) -> AsyncIterator[bytes]:
        """Read a blocking SDK stream on a thread; closing the consumer closes the stream."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)
        stopping = threading.Event()

        def pump() -> None:
            try:
                for item in stream:
                    if stopping.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as exc:  # the stream was closed under us, or Docker went away
                log.debug("docker stream ended: %s", exc)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        thread = threading.Thread(target=pump, daemon=True, name="docker-stream")
        thread.start()
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            stopping.set()
            with contextlib.suppress(Exception):
                stream.close()

    async def watch(self) -> AsyncIterator[RuntimeEvent]:
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_INSTANCE}={self.instance}"],
            "event": ["start", "die", "destroy", "oom"],
        }
        while True:
            try:
                stream = await self._call(self._api.events, decode=True, filters=filters)
                async for raw in self._drain(stream):
                    event = cast(dict[str, Any], raw)
                    attributes = event.get("Actor", {}).get("Attributes", {})
                    yield RuntimeEvent(
                        action=str(event.get("Action", "")),
                        service=str(attributes.get(LABEL_SERVICE, "")),
                        replica_id=str(event.get("id", "")),
                    )
            except RuntimeFailure as exc:
                log.warning("docker events stream failed, retrying: %s", exc.message)
            await asyncio.sleep(1)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; Python keeps microseconds.
    head, _, rest = value.partition(".")
    fraction = rest.rstrip("Z")[:6]
    text = f"{head}.{fraction}" if fraction else head
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _replica_from_inspect(data: dict[str, Any], node: str) -> Replica:
    labels = data["Config"]["Labels"] or {}
    state = data["State"]
    port = None
    for bindings in (data["NetworkSettings"].get("Ports") or {}).values():
        for binding in bindings or []:
            if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                port = int(binding["HostPort"])
                break
    host_network = (data.get("HostConfig") or {}).get("NetworkMode") == "host"
    if port is None and host_network and str(labels.get(LABEL_HOST_PORT, "")).isdigit():
        port = int(labels[LABEL_HOST_PORT])  # its own label (Legato sets it), not an image's
    return Replica(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        service=labels.get(LABEL_SERVICE, ""),
        deployment=labels.get(LABEL_DEPLOYMENT, ""),
        slot=int(labels.get(LABEL_REPLICA, "0")),
        state=state["Status"],
        node=node,
        host_port=port,
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        exit_code=state.get("ExitCode") if state["Status"] in ("exited", "dead") else None,
        error=state.get("Error") or ("out of memory" if state.get("OOMKilled") else ""),
    )


def _stats_from_api(replica_id: str, raw: dict[str, Any]) -> ReplicaStats | None:
    """Docker's stats document, reduced as `docker stats` does it (memory without the page
    cache: cgroup v1's total_inactive_file, or v2's inactive_file)."""
    cpu = raw.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    if "total_usage" not in usage or "system_cpu_usage" not in cpu:
        return None  # not running (a stopped container has empty stats)
    memory = raw.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    used = max(0, int(memory.get("usage") or 0) - int(cache or 0))
    networks = (raw.get("networks") or {}).values()
    return ReplicaStats(
        replica_id=replica_id,
        at=time.time(),
        cpu_ns=int(usage["total_usage"]),
        system_ns=int(cpu["system_cpu_usage"]),
        online_cpus=int(cpu.get("online_cpus") or len(usage.get("percpu_usage") or ()) or 1),
        memory_used=used,
        memory_limit=int(memory.get("limit") or 0),
        network_rx=sum(int(n.get("rx_bytes") or 0) for n in networks),
        network_tx=sum(int(n.get("tx_bytes") or 0) for n in networks),
    )


def _log_line(replica: str, line: str) -> LogLine:
    stamp, _, message = line.partition(" ")
    return LogLine(replica=replica, timestamp=_parse_time(stamp), message=message)
