"""HAProxy's per-request log, read from a unix datagram socket for request metrics.

HAProxy sends one datagram per request (`log <socket> format raw`, `log-format LOG_FORMAT`)
without ever waiting for the reader: when nobody reads, or the socket's queue is full, lines
are dropped and the edge serves on. A thread reads: one wakeup drains every queued datagram,
and after a small batch it sleeps a moment so the next wakeup finds many (waking a thread per
request cost ~40 us each at a few thousand requests per second; batched, a line costs a few).
That pause is only taken when the kernel lets enough datagrams queue meanwhile:
`net.unix.max_dgram_qlen` is 10 by default, and the setup script raises it (SETUP_QLEN).

(HAProxy can also buffer lines in a ring and forward them over a stream socket, which would
keep the lines logged while the control plane restarts; but a worker's forwarder stops at the
start of a reload, losing the lines of requests that finish on the old worker afterwards
(haproxy/haproxy#3436), and Legato reloads HAProxy whenever a service is added or removed.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

from legato.monitor.requests import RequestMetrics

log = logging.getLogger(__name__)

# backend, server, status, total active time (ms), bytes sent to the client
LOG_FORMAT = "%b %s %ST %Ta %B"
BACKEND_PREFIX = "svc_"  # every service's backend is named BACKEND_PREFIX + its name
_PREFIX = BACKEND_PREFIX.encode()
_QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")
SETUP_QLEN = 1024  # what scripts/setup.sh sets
_BATCH = 1024  # datagrams handled per wakeup at most
_PAUSE_S = 0.02
_RECEIVE_BUFFER = 4 * 1024 * 1024


def parse_line(line: bytes) -> tuple[str, int, int] | None:
    """(service, status, latency ms) of one log line, or None for a line of no service
    (unknown hosts, HAProxy's own messages) or one that is not in LOG_FORMAT."""
    parts = line.split()
    if len(parts) != 5 or not parts[0].startswith(_PREFIX) or len(parts[0]) == len(_PREFIX):
        return None
    try:
        int(parts[4])  # bytes: unused, but a line without it is not ours
        return parts[0][len(_PREFIX):].decode(), int(parts[2]), int(parts[3])
    except (ValueError, UnicodeDecodeError):
        return None


def queue_length() -> int:
    """How many datagrams a unix socket may queue on this host (net.unix.max_dgram_qlen)."""
    try:
        return int(_QLEN.read_text())
    except (OSError, ValueError):
        return 10


def pause_for(qlen: int) -> float:
    """How long the reader may sleep after a small batch: long enough to batch, short enough
    that the lines arriving meanwhile fit in the socket's queue at thousands per second."""
    return _PAUSE_S if qlen >= 256 else 0.0


class AccessLogReader:
    """Binds `path` and feeds every line HAProxy sends there into `metrics`."""

    def __init__(self, path: Path, metrics: RequestMetrics, *, pause_s: float | None = None) -> None:
        self.path = path
        self.metrics = metrics
        self.pause_s = pause_for(queue_length()) if pause_s is None else pause_s
        self.lines = 0  # datagrams read
        self.records = 0  # of them, requests of a service
        self.notices = 0  # HAProxy's own messages (a server going up, say), unknown hosts
        self.invalid = 0  # lines of a service's backend that do not parse
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the socket (replacing one a previous run left) and start reading."""
        qlen = queue_length()
        if qlen < SETUP_QLEN:
            log.warning("net.unix.max_dgram_qlen is %d: request log lines may be dropped under "
                        "load (scripts/setup.sh sets %d)", qlen, SETUP_QLEN)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._sock = sock
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._sock is None:
            return
        self._stopping.set()
        # Wake the blocking recv with an empty datagram of our own.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
            poke.sendto(b"", str(self.path))
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                batch = [sock.recv(65536)]
                while len(batch) < _BATCH:
                    try:
                        batch.append(sock.recv(65536, socket.MSG_DONTWAIT))
                    except BlockingIOError:
                        break
            except OSError as exc:
                if not self._stopping.is_set():
                    log.warning("access log socket failed: %s", exc)
                return
            self.ingest(batch, time.time())
            if self.pause_s and len(batch) < _BATCH // 4:
                time.sleep(self.pause_s)  # let the next lines gather in the socket's queue

    def ingest(self, lines: list[bytes], at: float) -> int:
        """Parse and record a batch of lines that arrived at `at`; how many were requests."""
        records = []
        invalid = count = 0
        for line in lines:
            if not line:
                continue
            count += 1
            parsed = parse_line(line)
            if parsed is not None:
                records.append(parsed)
            elif line.startswith(_PREFIX):
                invalid += 1
        self.metrics.record_many(records, at)
        self.lines += count
        self.records += len(records)
        self.invalid += invalid
        self.notices += count - len(records) - invalid
        return len(records)
