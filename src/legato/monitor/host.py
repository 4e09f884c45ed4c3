"""The host's own figures (CPU, memory, disk) and the control plane's, sampled in a thread."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class HostSample:
    at: float
    cpu_percent: float  # of the whole host, 100 = every core busy
    cpus: int
    memory_used: int
    memory_total: int
    disk_used: int  # of the file system holding the data dir
    disk_total: int
    load_1m: float


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float
    resident_bytes: int
    open_fds: int
    threads: int
    started_at: float  # wall clock


class HostSampler:
    """`sample()` blocks briefly (a few reads of /proc): call it from a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(None)  # the first call only starts the measurement
        self.latest: HostSample | None = None

    def sample(self) -> HostSample:
        memory = psutil.virtual_memory()
        disk = shutil.disk_usage(self.data_dir)
        self.latest = HostSample(
            at=time.time(),
            cpu_percent=psutil.cpu_percent(None),
            cpus=psutil.cpu_count() or 1,
            memory_used=memory.total - memory.available,
            memory_total=memory.total,
            disk_used=disk.used,
            disk_total=disk.total,
            load_1m=os.getloadavg()[0],
        )
        return self.latest

    def process(self) -> ProcessSample:
        with self._process.oneshot():
            times = self._process.cpu_times()
            return ProcessSample(
                cpu_seconds=times.user + times.system,
                resident_bytes=self._process.memory_info().rss,
                open_fds=self._process.num_fds(),
                threads=self._process.num_threads(),
                started_at=self._process.create_time(),
            )
