"""Container counters read from a cgroup tree and /proc (laid out in a temporary directory as
the kernel does), for cgroup v1 and v2, and Docker's stats document as the fallback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from legato.runtime.cgroups import CgroupReader, cgroup_paths, network_bytes
from legato.runtime.docker import _stats_from_api
from legato.ticker import Ticker

CID = "1b42f5f1d388bea8476c894e60bb81d261094e5aed5d6c0052176b0438078633"
PID = 4242
NET_DEV = "\n".join([
    "Inter-|   Receive                                                |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs"
    " drop fifo colls carrier compressed",
    "    lo:    5000      10    0    0    0     0          0         0     5000      10    0"
    "    0    0     0       0          0",
    "  eth0:    1200       9    0    0    0     0          0         0      800       7    0"
    "    0    0     0       0          0",
    "  eth1:      34       1    0    0    0     0          0         0       66       1    0"
    "    0    0     0       0          0",
]) + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    write(root / "stat", "cpu  100 0 50 800 40 5 5 0 0 0\ncpu0 50 0 25 400 20 2 2 0 0 0\n")
    write(root / "meminfo", "MemTotal:        2048000 kB\nMemFree:  100 kB\n")
    write(root / str(PID) / "net" / "dev", NET_DEV)
    return root


def v1(tmp_path: Path, proc: Path, *, limit: int) -> Path:
    cgroup = tmp_path / "cgroup"
    write(proc / str(PID) / "cgroup",
          "".join(f"{i}:{c}:/docker/{CID}\n" for i, c in enumerate(
              ["cpu", "cpuacct", "memory", "pids", "name=systemd"], start=1)) + f"0::/docker/{CID}\n")
    write(cgroup / "cpuacct" / "docker" / CID / "cpuacct.usage", "27596978\n")
    memory = cgroup / "memory" / "docker" / CID
    write(memory / "memory.usage_in_bytes", "831488\n")
    write(memory / "memory.limit_in_bytes", f"{limit}\n")
    write(memory / "memory.stat", "cache 4096\ninactive_file 100\ntotal_inactive_file 4096\n")
    return cgroup


def test_cgroup_v1_counters(tmp_path: Path, proc: Path) -> None:
    cgroup = v1(tmp_path, proc, limit=64 * 1024**2)
    [(_, stats)] = CgroupReader(proc, cgroup).read_all([(CID, PID)]).items()
    assert not isinstance(stats, Exception)
    assert stats.cpu_ns == 27596978
    assert stats.system_ns == 1000 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert (stats.memory_used, stats.memory_limit) == (831488 - 4096, 64 * 1024**2)
    assert (stats.network_rx, stats.network_tx) == (1234, 866)  # lo left out


def test_an_unlimited_container_is_limited_by_the_hosts_memory(tmp_path: Path, proc: Path) -> None:
    cgroup = v1(tmp_path, proc, limit=9223372036854771712)
    stats = CgroupReader(proc, cgroup).read_all([(CID, PID)])[CID]
    assert not isinstance(stats, Exception)
    assert stats.memory_limit == 2048000 * 1024


def test_cgroup_v2_counters(tmp_path: Path, proc: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(proc / str(PID) / "cgroup", f"0::/system.slice/docker-{CID}.scope\n")
    unified = cgroup / "system.slice" / f"docker-{CID}.scope"
    write(unified / "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    write(unified / "memory.current", "900000\n")
    write(unified / "memory.max", "max\n")
    write(unified / "memory.stat", "anon 1\nfile 10\ninactive_file 100000\n")
    stats = CgroupReader(proc, cgroup).read_all([(CID, PID)])[CID]
    assert not isinstance(stats, Exception)
    assert (stats.cpu_ns, stats.memory_used, stats.memory_limit) == (
        1_500_000, 800000, 2048000 * 1024)


def test_a_pid_reused_by_another_process_is_refused_not_read(tmp_path: Path, proc: Path) -> None:
    cgroup = v1(tmp_path, proc, limit=1024**3)
    write(proc / str(PID) / "cgroup", "1:cpu:/user.slice\n2:cpuacct:/user.slice\n3:memory:/user.slice\n")
    result = CgroupReader(proc, cgroup).read_all([(CID, PID)])[CID]
    assert isinstance(result, ValueError)


def test_a_container_gone_meanwhile_is_an_error_and_the_others_are_read(
    tmp_path: Path, proc: Path
) -> None:
    cgroup = v1(tmp_path, proc, limit=1024**3)
    found = CgroupReader(proc, cgroup).read_all([(CID, PID), ("f" * 64, 9999)])
    assert not isinstance(found[CID], Exception)
    assert isinstance(found["f" * 64], OSError)


def test_cgroup_paths_and_network_of_a_process(tmp_path: Path, proc: Path) -> None:
    v1(tmp_path, proc, limit=1)
    paths = cgroup_paths(PID, proc)
    assert paths["cpuacct"] == paths[""] == f"/docker/{CID}"
    assert network_bytes(PID, proc) == (1234, 866)


def test_dockers_stats_document_is_reduced_like_docker_stats() -> None:
    raw = {
        "cpu_stats": {"cpu_usage": {"total_usage": 39543469, "percpu_usage": [1, 2]},
                      "system_cpu_usage": 1552910000000, "online_cpus": 2},
        "memory_stats": {"usage": 2396160, "limit": 25276502016,
                         "stats": {"total_inactive_file": 1658880}},
        "networks": {"eth0": {"rx_bytes": 286, "tx_bytes": 14}, "eth1": {"rx_bytes": 4}},
    }
    stats = _stats_from_api(CID, raw)
    assert stats is not None
    assert (stats.cpu_ns, stats.system_ns, stats.online_cpus) == (39543469, 1552910000000, 2)
    assert (stats.memory_used, stats.memory_limit) == (2396160 - 1658880, 25276502016)
    assert (stats.network_rx, stats.network_tx) == (290, 14)
    assert _stats_from_api(CID, {"cpu_stats": {}, "memory_stats": {}}) is None  # stopped


async def test_a_new_interval_applies_to_the_wait_under_way() -> None:
    ticker = Ticker(3600)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(ticker.wait())
    await asyncio.sleep(0.01)
    ticker.interval_s = 0.05
    await asyncio.wait_for(waiting, 1)
    assert 0.04 <= loop.time() - started < 0.5
    started = loop.time()
    await ticker.wait(spent_s=0.04)  # a round that already took most of the interval
    assert loop.time() - started < 0.04
