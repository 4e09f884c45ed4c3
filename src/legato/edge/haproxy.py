"""HAProxy as the edge: one daemon (master-worker) that outlives the control plane.

The files (haproxy.cfg, hosts.map) are the source of truth and are rewritten on every
change. Replica changes go through the admin socket with no reload; a new or removed backend
is a seamless reload (USR2 to the master, listeners passed over the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from legato.edge.accesslog import BACKEND_PREFIX, LOG_FORMAT
from legato.edge.base import Route, Upstream
from legato.errors import EdgeFailure

log = logging.getLogger(__name__)

_FALLBACK = "b_default"
WAKER_SERVER = "legato-wake"
_MASTER_CONNECT_S = 3.0
_RELOAD_S = 10.0


def backend_name(service: str) -> str:
    return f"{BACKEND_PREFIX}{service}"


class HAProxyEdge:
    """Drives one HAProxy daemon whose files live in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        host: str,
        http_port: int,
        binary: str = "haproxy",
        access_log: Path | None = None,
        waker: Path | None = None,
    ) -> None:
        """`access_log`: the datagram socket HAProxy logs each request to (none: no logging).
        `waker`: a unix socket each backend falls back to while it has no usable server."""
        self.dir = directory
        self.access_log = access_log
        self.waker = waker
        self.host = host
        self.http_port = http_port
        self.binary = binary
        self.cfg = directory / "haproxy.cfg"
        self.map = directory / "hosts.map"
        self.socket = directory / "admin.sock"
        self.master_socket = directory / "master.sock"
        self.pidfile = directory / "haproxy.pid"
        self.state_file = directory / "routes.json"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown}:{http_port}"
        self._applied: dict[str, Route] = {}
        self._lock = asyncio.Lock()
        self._deletions: set[asyncio.Task[None]] = set()  # servers waiting to be deleted
        self._worker: str | None = None  # pid of the current worker, the target of commands

    # lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._master_pid():
            self._worker = await self._current_worker()
            if self._worker:
                self._applied = self._load_state()
                log.info("adopted running HAProxy (master pid %s)", self._master_pid())
                if self._written() != self.render(self._applied):
                    # Started by another version of Legato, or with other settings.
                    self._write_files(self._applied)
                    await self._check_config()
                    await self._reload()
                return
            log.warning("HAProxy runs but its master socket does not answer; restarting it")
            await self.shutdown()
        self._applied = {}
        self._write_files({})
        await self._check_config()
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-W", "-D", "-S", f"{self.master_socket},mode,600",
            "-f", str(self.cfg), "-p", str(self.pidfile),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise EdgeFailure(f"haproxy did not start: {err.decode().strip()[-500:]}")
        for _ in range(100):
            self._worker = await self._current_worker()
            if self._worker:
                return
            await asyncio.sleep(0.05)
        raise EdgeFailure("haproxy started but its master socket does not answer")

    async def shutdown(self) -> None:
        pid = self._master_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                await asyncio.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    async def ping(self) -> None:
        await self._command("show info")

    # routes ---------------------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return list(self._applied.values())

    async def apply(self, routes: Sequence[Route]) -> None:
        async with self._lock:
            desired = {r.service: r for r in routes}
            old = self._applied
            self._write_files(desired)
            if set(desired) != set(old):
                await self._reload()
            else:
                for service, route in desired.items():
                    await self._apply_runtime(old[service], route)
            self._applied = desired

    async def _apply_runtime(self, old: Route, new: Route) -> None:
        backend = backend_name(new.service)
        for domain in set(old.domains) - set(new.domains):
            await self._command(f"del map {self.map} {domain}")
        for domain in set(new.domains) - set(old.domains):
            await self._command(f"add map {self.map} {domain} {backend}")
        before = {u.name: u for u in old.upstreams}
        after = {u.name: u for u in new.upstreams}
        for name, upstream in after.items():
            previous = before.get(name)
            if previous is None:
                await self._command(f"add server {backend}/{name} 127.0.0.1:{upstream.port}")
                await self._command(f"set server {backend}/{name} state {upstream.state}")
            elif previous.port != upstream.port:
                await self._command(
                    f"set server {backend}/{name} addr 127.0.0.1 port {upstream.port}"
                )
            if previous is not None and previous.state != upstream.state:
                await self._command(f"set server {backend}/{name} state {upstream.state}")
        for name in set(before) - set(after):
            await self._remove_server(backend, name)

    async def _remove_server(self, backend: str, name: str) -> None:
        """Out of the route at once (maint); deleted once its last connection has closed,
        which is waited for in the background so other route changes do not queue behind."""
        await self._command(f"set server {backend}/{name} state maint")
        if not await self._delete_server(backend, name):
            task = asyncio.create_task(self._delete_when_idle(backend, name))
            self._deletions.add(task)
            task.add_done_callback(self._deletions.discard)

    async def _delete_server(self, backend: str, name: str) -> bool:
        reply = await self._command(f"del server {backend}/{name}", check=False)
        return "deleted" in reply.lower() or "no such" in reply.lower()

    async def _delete_when_idle(self, backend: str, name: str) -> None:
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if await self._delete_server(backend, name):
                    return
            log.warning("server %s/%s left in maint: its connections did not close", backend, name)
        except EdgeFailure as exc:  # reloaded or gone meanwhile: the files no longer have it
            log.debug("deleting %s/%s: %s", backend, name, exc.message)

    async def sessions(self, service: str, upstream: str) -> int:
        backend = backend_name(service)
        reply = await self._command(f"show stat {backend} 4 -1", check=False)
        lines = reply.strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            return 0
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") == upstream:
                return int(row.get("scur") or 0) + int(row.get("qcur") or 0)
        return 0

    async def backend_sessions(self) -> dict[str, int]:
        """Connections open on each service's backend now."""
        reply = await self._command("show stat -1 2 -1", check=False)
        lines = reply.strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            backend = row.get("pxname", "")
            if backend.startswith(BACKEND_PREFIX) and row.get("svname") == "BACKEND":
                found[backend.removeprefix(BACKEND_PREFIX)] = int(row.get("scur") or 0)
        return found

    # files and processes --------------------------------------------------------------------

    def _write_files(self, routes: dict[str, Route]) -> None:
        lines = [
            f"{domain} {backend_name(route.service)}"
            for route in routes.values()
            for domain in route.domains
        ]
        _atomic_write(self.map, "\n".join(lines) + "\n")
        _atomic_write(self.cfg, self.render(routes))
        _atomic_write(
            self.state_file,
            json.dumps({
                s: {"domains": list(r.domains),
                    "upstreams": [[u.name, u.port, u.state] for u in r.upstreams]}
                for s, r in routes.items()
            }),
        )

    def _written(self) -> str:
        try:
            return self.cfg.read_text()
        except FileNotFoundError:
            return ""

    def _load_state(self) -> dict[str, Route]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {
            service: Route(
                service,
                tuple(body["domains"]),
                tuple(Upstream(name, port, state) for name, port, state in body["upstreams"]),
            )
            for service, body in raw.items()
        }

    def render(self, routes: dict[str, Route]) -> str:
        """The whole configuration for these routes."""
        bind = f"{self.host}:{self.http_port}" if self.host not in ("", "*") else f":{self.http_port}"
        logged = self.access_log is not None
        out = [
            "global",
            "    master-worker",
            f"    stats socket {self.socket} mode 600 level admin expose-fd listeners",
            "    stats timeout 30s",
            "    maxconn 4000",
            "    hard-stop-after 5m",
            *([f"    log {self.access_log} len 2048 format raw local0 info"] if logged else []),
            "",
            "defaults",
            "    mode http",
            *(["    log global", f'    log-format "{LOG_FORMAT}"', "    option dontlognull"]
              if logged else []),
            "    option idle-close-on-response",
            "    option http-keep-alive",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout http-keep-alive 60s",
            "    timeout http-request 10s",
            "    retries 2",
            "    option redispatch",
            "",
            "frontend http",
            f"    bind {bind}",
            f"    use_backend %[req.hdr(host),lower,word(1,:),map({self.map},{_FALLBACK})]",
            "",
            f"backend {_FALLBACK}",
            '    http-request return status 404 content-type application/json string '
            '"{\\"error\\":\\"no service for this host\\",\\"code\\":\\"ROUTE_NOT_FOUND\\"}"',
        ]
        for service in sorted(routes):
            route = routes[service]
            out += ["", f"backend {backend_name(service)}", "    balance roundrobin"]
            for upstream in route.upstreams:
                disabled = " disabled" if upstream.state != "ready" else ""
                out.append(f"    server {upstream.name} 127.0.0.1:{upstream.port}{disabled}")
            if self.waker is not None:
                # Only used while no replica can take a request (a sleeping service, say).
                out.append(f"    server {WAKER_SERVER} unix@{self.waker} backup")
        return "\n".join(out) + "\n"

    async def _check_config(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-q", "-f", str(self.cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise EdgeFailure(f"haproxy refused its configuration: {(out + err).decode()[-800:]}")

    async def _reload(self) -> None:
        """Seamless reload through the master CLI; done once a new worker is current."""
        before = self._worker or await self._current_worker()
        with contextlib.suppress(EdgeFailure):
            # The master re-executes itself on reload and may cut this connection doing so;
            # whether the reload happened shows in the worker's pid below.
            await self._master("reload")
        deadline = time.monotonic() + _RELOAD_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            current = await self._current_worker()
            if current and current != before:
                self._worker = current
                return
        raise EdgeFailure(f"haproxy did not finish reloading within {_RELOAD_S:g}s")

    async def _current_worker(self) -> str | None:
        """The pid of the worker that serves the current configuration (from `show proc`)."""
        try:
            reply = await self._master("show proc")
        except EdgeFailure:
            return None
        lines = reply.splitlines()
        for index, line in enumerate(lines):
            if line.strip() == "# workers" and index + 1 < len(lines):
                fields = lines[index + 1].split()
                if fields and fields[0].isdigit():
                    return fields[0]
        return None

    def _master_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    async def _command(self, command: str, *, check: bool = True) -> str:
        """A runtime API command, sent to the current worker through the master CLI (so it
        never lands on an old worker that is finishing its connections after a reload)."""
        if self._worker is None:
            raise EdgeFailure("haproxy has no current worker")
        reply = await self._master(f"@!{self._worker} {command}")
        if check and _is_error(reply):
            raise EdgeFailure(f"haproxy refused {command.split()[0:2]}: {reply.strip()}")
        return reply

    async def _master(self, command: str) -> str:
        """One command on the master socket (one command per connection).

        While the master re-executes itself for a reload, its socket refuses connections for
        a moment: connecting is retried for up to `_MASTER_CONNECT_S`. A failure once the
        command has been sent is an EdgeFailure (the command may or may not have run).
        """
        deadline = time.monotonic() + _MASTER_CONNECT_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.master_socket))
                break
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                if time.monotonic() > deadline or self._master_pid() is None:
                    raise EdgeFailure(f"haproxy master socket: {exc}") from exc
                await asyncio.sleep(0.02)
            except OSError as exc:
                raise EdgeFailure(f"haproxy master socket: {exc}") from exc
        try:
            writer.write(command.encode() + b"\n")
            writer.write_eof()  # the master CLI answers and closes once input ends
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        except OSError as exc:
            raise EdgeFailure(f"haproxy master socket ({command.split()[0]}): {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _is_error(reply: str) -> bool:
    text = reply.strip().lower()
    return text.startswith(("unknown", "no such", "require", "invalid", "'")) or "error" in text[:40]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
