"""Shared pieces of the benchmarks: a throwaway `legato server`, bare Docker containers for the
baselines, a passive Docker event recorder, wrk and a few statistics helpers.

Every server gets its own instance label, data directory and ports. Everything it makes
(containers, volumes, the HAProxy daemon, the data directory) is removed on the way out, also
when the benchmark fails or is interrupted. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"  # git-ignored; server logs of failed runs land here
LEGATO_BIN = ROOT / ".venv" / "bin" / "legato"
IMAGE = "legato-test/busybox:latest"
HTTPD_ARGV = ["httpd", "-f", "-p", "8080", "-h", "/www"]
LOCALHOST = "127.0.0.1"
T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not be carried out (as opposed to a figure missing its target)."""


# small helpers ---------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], T | None], *, timeout: float, interval: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; BenchError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return percentile(values, 50)


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def verdict(value: float, target: float, *, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return "MET" if ok else "MISSED"


def table(headers: list[str], rows: list[list[float | None]], *, indent: str = "  ") -> list[str]:
    """Lines of a right-aligned table of seconds shown as ms; a last row of column medians."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:.0f}"

    medians: list[float | None] = []
    for column in range(len(headers)):
        known = [v for row in rows if (v := row[column]) is not None]
        medians.append(median(known) if known else None)
    body = [["round", *headers]]
    body += [[str(i), *(cell(v) for v in row)] for i, row in enumerate(rows, start=1)]
    body.append(["median", *(cell(v) for v in medians)])
    widths = [max(len(line[c]) for line in body) for c in range(len(body[0]))]
    return [indent + "  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in body]


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so `finally` blocks (the cleanups) still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# /proc ----------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """VmRSS of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), s; 0 for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15


def pids(*argv: str) -> list[int]:
    """Pids printed by a pgrep command line, e.g. pids("-x", "docker-proxy")."""
    result = subprocess.run(["pgrep", *argv], capture_output=True, text=True, check=False)
    return [int(pid) for pid in result.stdout.split()]


@dataclass(frozen=True)
class CpuSnapshot:
    """Host CPU counters and the CPU time of some processes, to diff over an interval."""

    at: float
    host_total: int
    host_idle: int
    procs: dict[str, float]

    @classmethod
    def take(cls, groups: dict[str, list[int]]) -> CpuSnapshot:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:]]
        return cls(
            time.monotonic(),
            sum(ticks),
            ticks[3] + ticks[4],
            {name: sum(cpu_seconds(pid) for pid in group) for name, group in groups.items()},
        )

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        """host_busy_pct (of all cores) and, per group, percent of one core."""
        wall = self.at - before.at
        total = self.host_total - before.host_total
        out = {"host_busy_pct": 100 * (1 - (self.host_idle - before.host_idle) / total) if total else 0.0}
        for name, value in self.procs.items():
            out[f"{name}_pct"] = 100 * (value - before.procs.get(name, 0.0)) / wall if wall else 0.0
        return out


# docker ----------------------------------------------------------------------------------------


def docker(*args: str, timeout: float = 60) -> str:
    """Run the docker CLI; its stdout, stripped. BenchError when it fails."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def docker_run_bare(label: str) -> str:
    """The baseline: `docker run -d -p 127.0.0.1::8080` of the test image; its container id."""
    out = docker("run", "-d", "-p", f"{LOCALHOST}::8080", "--label", label, IMAGE, *HTTPD_ARGV)
    return out.splitlines()[-1]


def docker_published_port(container: str) -> int:
    """The 127.0.0.1 host port `docker port` reports for the container's 8080/tcp."""
    for line in docker("port", container, "8080/tcp").splitlines():
        host, _, port = line.strip().rpartition(":")
        if host == LOCALHOST:
            return int(port)
    raise BenchError(f"container {container[:12]} publishes no 127.0.0.1 port for 8080")


def docker_ids(*labels: str) -> list[str]:
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    return docker("ps", "-aq", "--no-trunc", *filters).split()


def docker_remove(ids: list[str]) -> None:
    if ids:
        docker("rm", "-f", *ids, timeout=120)


@dataclass(frozen=True)
class DockerEvent:
    at: float  # wall-clock seconds (time.time() scale)
    action: str
    container: str
    service: str


class DockerEvents:
    """Records container events in the background (passive: no polling) of the containers that
    carry any of `labels` ("key=value").

    Timestamps come from the Docker daemon in wall-clock nanoseconds, so they compare with
    time.time() taken by the benchmark on the same host.
    """

    def __init__(self, *labels: str) -> None:
        self.labels = {tuple(label.split("=", 1)) for label in labels}
        self.events: list[DockerEvent] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DockerEvents:
        self._proc = subprocess.Popen(
            [
                "docker",
                "events",
                "--format",
                "{{json .}}",
                "--filter",
                "type=container",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True, name="docker-events")
        self._thread.start()
        time.sleep(0.2)  # let the CLI subscribe before anything happens
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                raw: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            attributes = raw.get("Actor", {}).get("Attributes", {})
            if not any(attributes.get(key) == value for key, value in self.labels):
                continue
            event = DockerEvent(
                at=int(raw.get("timeNano", 0)) / 1e9,
                action=str(raw.get("Action", raw.get("status", ""))),
                container=str(raw.get("id", "")),
                service=str(attributes.get("legato.service", "")),
            )
            with self._lock:
                self.events.append(event)

    def first(
        self,
        action: str,
        *,
        container: str | None = None,
        service: str | None = None,
        after: float = 0.0,
    ) -> float | None:
        """Wall time of the first matching event at or after `after`, if seen."""
        with self._lock:
            for event in self.events:
                if event.action != action or event.at < after:
                    continue
                if container is not None and not event.container.startswith(container):
                    continue
                if service is not None and event.service != service:
                    continue
                return event.at
        return None

    def all(self, action: str, *, service: str | None = None, after: float = 0.0) -> list[float]:
        with self._lock:
            return [
                e.at
                for e in self.events
                if e.action == action and e.at >= after and (service is None or e.service == service)
            ]


# HTTP probing ----------------------------------------------------------------------------------


def new_client(timeout: float = 2.0) -> httpx.Client:
    """A client that opens a new connection per request, like curl (no stale keep-alives
    across HAProxy reloads)."""
    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


def first_200(
    client: httpx.Client,
    url: str,
    *,
    host: str | None = None,
    interval: float = 0.005,
    timeout: float = 60.0,
) -> tuple[float, int]:
    """Poll GET `url` every `interval` s until it answers 200: (time.monotonic() then, tries)."""
    headers = {"Host": host} if host else {}
    deadline = time.monotonic() + timeout
    tries = 0
    last = ""
    while True:
        tries += 1
        tick = time.monotonic()
        try:
            status = client.get(url, headers=headers).status_code
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return time.monotonic(), tries
            last = f"HTTP {status}"
        if tick > deadline:
            raise BenchError(f"no HTTP 200 from {url} (Host: {host}) within {timeout:g}s; last: {last}")
        time.sleep(max(0.0, tick + interval - time.monotonic()))


# the server ------------------------------------------------------------------------------------


@dataclass
class Legato:
    """One running `legato server` and the ways to talk to it."""

    data_dir: Path
    instance: str
    api_port: int
    edge_port: int
    token: str
    proc: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # more LEGATO_* variables
    api: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.api = httpx.Client(
            base_url=f"{self.api_url}/api/v1",
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    @property
    def label(self) -> str:
        """What Legato puts on every container of this instance."""
        return f"legato.instance={self.instance}"

    @property
    def bare_label(self) -> str:
        """What the bare-Docker baselines of this run carry.

        Not `label`: Legato treats every container with its instance label as its own, and a
        periodic resync tears down (all!) the instance's containers once it sees one without a
        legato.service label.
        """
        return f"legato-bench.instance={self.instance}"

    @property
    def api_url(self) -> str:
        return f"http://{LOCALHOST}:{self.api_port}"

    @property
    def edge_url(self) -> str:
        return f"http://{LOCALHOST}:{self.edge_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LEGATO_DATA_DIR": str(self.data_dir),
            "LEGATO_INSTANCE": self.instance,
            "LEGATO_API_PORT": str(self.api_port),
            "LEGATO_EDGE_HTTP_PORT": str(self.edge_port),
            "LEGATO_EDGE_HOST": LOCALHOST,
            "LEGATO_BOOTSTRAP_TOKEN": self.token,
            "LEGATO_GIT_ALLOW_LOCAL": "true",  # source_deploy builds from a repository on disk
            # Polling and load far beyond any client's: the limits have tests of their own.
            "LEGATO_RATE_LIMITS": json.dumps(dict.fromkeys(
                ("reads", "writes", "bulk", "auth", "webhooks"), 10_000_000)),
            **self.settings,
        }

    # API conveniences ------------------------------------------------------------------------

    def deploy(self, *services: dict[str, Any]) -> httpx.Response:
        response = self.api.post("/deploy", json={"services": list(services)})
        if response.status_code != 202:
            raise BenchError(f"deploy answered {response.status_code}: {response.text[:500]}")
        return response

    def service(self, name: str) -> dict[str, Any]:
        response = self.api.get(f"/services/{name}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def scale(self, name: str, replicas: int) -> None:
        response = self.api.post(f"/services/{name}/scale", json={"replicas": replicas})
        if response.status_code != 202:
            raise BenchError(f"scale answered {response.status_code}: {response.text[:500]}")

    def delete(self, name: str, *, wait: bool = True, timeout: float = 60) -> None:
        """Delete a service; with `wait`, until Docker has none of its containers left."""
        response = self.api.delete(f"/services/{name}")
        if response.status_code not in (202, 404):
            raise BenchError(f"delete answered {response.status_code}: {response.text[:500]}")
        if wait:
            wait_for(
                lambda: not docker_ids(self.label, f"legato.service={name}"),
                timeout=timeout,
                interval=0.1,
                what=f"containers of {name} to go",
            )

    def haproxy_stats(self, backend: str) -> dict[str, dict[str, str]]:
        """`show stat` of one HAProxy backend from the admin socket: row per svname."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.data_dir / "edge" / "admin.sock"))
            sock.sendall(f"show stat {backend} -1 -1\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            raise BenchError(f"unexpected HAProxy stats: {lines[:2]}")
        header = lines[0][2:].split(",")
        rows = (dict(zip(header, line.split(","), strict=False)) for line in lines[1:])
        return {row["svname"]: row for row in rows if row.get("svname")}

    def wait_healthy(self, name: str, count: int, *, timeout: float = 120) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.service(name)
            replicas = body["replicas"]
            return body if replicas["healthy"] == replicas["desired"] == count else None

        return wait_for(ready, timeout=timeout, interval=0.05, what=f"{name} healthy x{count}")


def service_spec(name: str, replicas: int = 1) -> dict[str, Any]:
    """The benchmarks' service: the test image with its health file and a .localhost domain."""
    return {
        "name": name,
        "image": IMAGE,
        "replicas": replicas,
        "port": 8080,
        "health": "/healthz",
        "domain": f"{name}.localhost",
    }


@contextlib.contextmanager
def legato_server(
    *, start_timeout: float = 60, argv: list[str] | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Legato]:
    """Start a server with its own label, data dir and ports; tear everything down after.

    `argv` replaces `.venv/bin/legato server` (e.g. to run it under a profiler); `settings`
    adds LEGATO_* variables."""
    data_dir = Path(tempfile.mkdtemp(prefix="legato-bench-"))
    server = Legato(
        data_dir=data_dir,
        instance=f"bench{secrets.randbelow(10**6)}",
        api_port=free_port(),
        edge_port=free_port(),
        token="lgt_" + secrets.token_urlsafe(32),
        settings=dict(settings or {}),
    )
    try:
        with terminate_on_sigterm():
            with server.log_path.open("ab") as log_file:
                server.proc = subprocess.Popen(
                    argv or [str(LEGATO_BIN), "server"],
                    env=server.env(),
                    cwd=data_dir,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            log(
                f"server {server.instance}: api :{server.api_port}, edge :{server.edge_port}, "
                f"pid {server.pid}, data {data_dir}"
            )

            def up() -> bool:
                assert server.proc is not None
                if server.proc.poll() is not None:
                    raise BenchError(f"server exited with {server.proc.returncode}")
                return httpx.get(f"{server.api_url}/api/v1/health", timeout=1).status_code == 200

            try:
                wait_for(up, timeout=start_timeout, interval=0.1, what="the server to answer")
                yield server
            except BaseException:
                OUT_DIR.mkdir(exist_ok=True)
                kept = OUT_DIR / f"{server.instance}-server.log"
                with contextlib.suppress(OSError):
                    shutil.copyfile(server.log_path, kept)
                log(f"server log tail (whole log kept in {kept}):\n{server.log_tail()}")
                raise
    finally:
        _teardown(server)


def _teardown(server: Legato) -> None:
    """Server, then HAProxy, then containers (Legato's and the baselines') and volumes of the
    instance, then the data dir."""
    with contextlib.suppress(Exception):
        server.api.close()
    proc = server.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _stop_haproxy(server.data_dir / "edge" / "haproxy.pid")
    try:
        docker_remove(docker_ids(server.label))
        docker_remove(docker_ids(server.bare_label))
        volumes = docker("volume", "ls", "-q", "--filter", f"label={server.label}").split()
        if volumes:
            docker("volume", "rm", "-f", *volumes)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        log(f"cleanup of {server.label} incomplete: {exc}")
    shutil.rmtree(server.data_dir, ignore_errors=True)
    log(f"server {server.instance}: cleaned up")


def _stop_haproxy(pidfile: Path) -> None:
    """SIGTERM the HAProxy master named in `pidfile` (its workers follow); SIGKILL after 5 s."""
    try:
        master = int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(master, sig)
            for _ in range(100):
                time.sleep(0.05)
                os.kill(master, 0)
        except ProcessLookupError:
            return
    log(f"haproxy master {master} did not exit")


# wrk -------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_s: float
    p99_s: float
    requests: int
    errors: int  # socket errors plus non-2xx/3xx answers
    error_detail: str  # e.g. "connect 0, read 12, write 0, timeout 3; non-2xx 0"
    output: str


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str, *, threads: int, connections: int, duration_s: int, headers: dict[str, str] | None = None
) -> WrkResult:
    """Run wrk with --latency and read its summary."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    result = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    out = result.stdout
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()[-300:]}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"cannot read wrk output:\n{out}")
    socket_errors = re.search(r"Socket errors:\s+(.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_detail = socket_errors.group(1).strip() if socket_errors else "no socket errors"
    bad_answers = int(non2xx.group(1)) if non2xx else 0
    detail = f"{socket_detail}; non-2xx {bad_answers}"
    errors = sum(int(n) for n in re.findall(r"\d+", socket_detail)) + bad_answers
    return WrkResult(
        float(rps.group(1)),
        _duration(p50.group(1)),
        _duration(p99.group(1)),
        int(total.group(1)),
        errors,
        detail,
        out,
    )
