"""HAProxy's per-request log, read from a unix datagram socket for request metrics.

HAProxy sends one datagram per request (`log <socket> format raw`, `log-format LOG_FORMAT`)
without ever waiting for the reader: when nobody reads, lines are dropped, and the edge serves
on. A thread reads with blocking calls (one wakeup drains every queued datagram), parses, and
hands each batch to `RequestMetrics` under one lock, so the event loop does none of this work.
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
_BATCH = 1024
_RECEIVE_BUFFER = 4 * 1024 * 1024


def parse_line(line: bytes) -> tuple[str, int, int] | None:
    """(service, status, latency ms) of one log line, or None for a line of no service
    (unknown hosts) or one that is not in LOG_FORMAT."""
    parts = line.split()
    if len(parts) != 5 or not parts[0].startswith(_PREFIX) or len(parts[0]) == len(_PREFIX):
        return None
    try:
        int(parts[4])  # bytes: unused, but a line without it is not ours
        return parts[0][len(_PREFIX):].decode(), int(parts[2]), int(parts[3])
    except (ValueError, UnicodeDecodeError):
        return None


class AccessLogReader:
    """Binds `path` and feeds every line HAProxy sends there into `metrics`."""

    def __init__(self, path: Path, metrics: RequestMetrics) -> None:
        self.path = path
        self.metrics = metrics
        self.lines = 0  # datagrams read
        self.records = 0  # of them, requests of a service
        self.invalid = 0  # neither a request of a service nor of an unknown host
        self.busy_seconds = 0.0  # thread CPU time spent parsing and recording
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the socket (replacing one a previous run left) and start reading."""
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
            started = time.thread_time()
            self.ingest(batch, time.time())
            self.busy_seconds += time.thread_time() - started

    def ingest(self, batch: list[bytes], at: float) -> int:
        """Parse and record one batch of datagrams that arrived at `at`."""
        records = []
        invalid = 0
        for datagram in batch:
            if not datagram:
                continue
            parsed = parse_line(datagram)
            if parsed is not None:
                records.append(parsed)
            elif not datagram.startswith(b"b_default "):
                invalid += 1
        self.metrics.record_many(records, at)
        self.lines += sum(1 for d in batch if d)
        self.records += len(records)
        self.invalid += invalid
        return len(records)
