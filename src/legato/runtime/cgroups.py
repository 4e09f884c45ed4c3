"""A local container's resource counters read straight from the kernel: its cgroup's files and
its network namespace's /proc/<pid>/net/dev.

This is what the Docker Engine reads to answer a stats request, without the HTTP request, the
JSON and the SDK around it: ~0.2 ms per container instead of ~2 ms of the control plane's CPU
(and as much again of dockerd's), which adds up at one sample per replica every few seconds.
Both cgroup versions are read; the runtime falls back to Docker's stats API when a file is
missing (a remote daemon, another layout).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from legato.runtime.base import ReplicaStats

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
_STAT_FIELDS = 8  # user nice system idle iowait irq softirq steal, as Docker sums them


def cgroup_paths(pid: int, proc: Path = PROC) -> dict[str, str]:
    """The process's cgroup per v1 controller, and "" for the v2 (unified) hierarchy."""
    paths: dict[str, str] = {}
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def host_cpu_ns(proc: Path = PROC) -> int:
    """CPU time the whole host has spent (all CPUs), in ns, as Docker's system_cpu_usage."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:1 + _STAT_FIELDS]
    return sum(int(f) for f in fields) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def host_memory(proc: Path = PROC) -> int:
    for line in (proc / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in meminfo")


def network_bytes(pid: int, proc: Path = PROC) -> tuple[int, int]:
    """(received, sent) bytes of every interface but lo in the process's network namespace."""
    rx = tx = 0
    for line in (proc / str(pid) / "net" / "dev").read_text().splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = counters.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


class CgroupReader:
    """Reads the counters of local containers; what does not change while a container runs
    (its cgroup's place, its memory limit) is found once."""

    def __init__(self, proc: Path = PROC, cgroup: Path = CGROUP) -> None:
        self.proc, self.cgroup = proc, cgroup
        self._known: dict[tuple[str, int], tuple[str, Path, Path, int]] = {}

    def read_all(self, containers: list[tuple[str, int]]) -> dict[str, ReplicaStats | Exception]:
        """Each (container id, init pid): its counters, or why they could not be read."""
        system_ns, host = host_cpu_ns(self.proc), host_memory(self.proc)
        self._known = {k: v for k, v in self._known.items() if k in set(containers)}
        found: dict[str, ReplicaStats | Exception] = {}
        for replica_id, pid in containers:
            try:
                found[replica_id] = self.read(replica_id, pid, system_ns, host)
            except (OSError, ValueError, IndexError) as exc:
                self._known.pop((replica_id, pid), None)
                found[replica_id] = exc
        return found

    def read(self, replica_id: str, pid: int, system_ns: int, host: int) -> ReplicaStats:
        """One container's counters (OSError or ValueError when they cannot be read)."""
        known = self._known.get((replica_id, pid))
        if known is None:
            known = self._known[(replica_id, pid)] = self._locate(replica_id, pid, host)
        version, cpu_dir, memory_dir, limit = known
        if version == "v1":
            cpu_ns = int((cpu_dir / "cpuacct.usage").read_text())
            usage = int((memory_dir / "memory.usage_in_bytes").read_text())
            cache = _stat_value((memory_dir / "memory.stat").read_text(), "total_inactive_file")
        else:
            cpu_ns = _stat_value((cpu_dir / "cpu.stat").read_text(), "usage_usec") * 1000
            usage = int((memory_dir / "memory.current").read_text())
            cache = _stat_value((memory_dir / "memory.stat").read_text(), "inactive_file")
        rx, tx = network_bytes(pid, self.proc)
        return ReplicaStats(
            replica_id=replica_id, at=time.time(), cpu_ns=cpu_ns, system_ns=system_ns,
            online_cpus=os.cpu_count() or 1, memory_used=max(0, usage - cache),
            memory_limit=limit, network_rx=rx, network_tx=tx,
        )

    def _locate(self, replica_id: str, pid: int, host: int) -> tuple[str, Path, Path, int]:
        paths = cgroup_paths(pid, self.proc)
        if not any(replica_id in path for path in paths.values()):
            raise ValueError(f"pid {pid} is not in the cgroup of {replica_id[:12]}")
        if "cpuacct" in paths and "memory" in paths:
            memory = self.cgroup / "memory" / paths["memory"].lstrip("/")
            limit = int((memory / "memory.limit_in_bytes").read_text())
            return ("v1", self.cgroup / "cpuacct" / paths["cpuacct"].lstrip("/"), memory,
                    min(limit, host))
        if "" in paths:
            unified = self.cgroup / paths[""].lstrip("/")
            raw = (unified / "memory.max").read_text().strip()
            return "v2", unified, unified, host if raw == "max" else min(int(raw), host)
        raise ValueError(f"no cpu and memory cgroups for pid {pid}")
