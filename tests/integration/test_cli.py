"""The `legato` CLI against a real server: deploy the example, then list, scale and remove."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import Legato, wait_for

ROOT = Path(__file__).resolve().parents[2]


def cli(legato: Legato, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEGATO_URL": legato.url, "LEGATO_TOKEN": legato.token,
           "LEGATO_CONFIG": str(legato.data_dir / "cli.toml")}
    return subprocess.run([sys.executable, "-m", "legato.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_deploy_example_then_ps_scale_rm(legato: Legato) -> None:
    deployed = cli(legato, "deploy", "-f", str(ROOT / "examples" / "hello.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    assert "hello" in deployed.stdout

    wait_for(lambda: legato.get_edge("hello.localhost").text == "hello from legato\n",
             timeout=15, what="hello.localhost to answer through the edge")
    legato.wait_healthy("hello", 2)

    listed = cli(legato, "ps")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("hello "))
    assert "2/2" in row

    assert cli(legato, "scale", "hello", "3").returncode == 0
    legato.wait_healthy("hello", 3)

    tokens = cli(legato, "tokens", "create", "--name", "ci-viewer", "--role", "viewer")
    assert tokens.returncode == 0
    viewer = tokens.stdout.strip()
    assert viewer.startswith("lgt_")
    denied = subprocess.run(
        [sys.executable, "-m", "legato.cli.main", "scale", "hello", "1"],
        env={**os.environ, "LEGATO_URL": legato.url, "LEGATO_TOKEN": viewer,
             "LEGATO_CONFIG": str(legato.data_dir / "none.toml")},
        capture_output=True, text=True, timeout=60, check=False)
    assert denied.returncode == 1
    assert "INSUFFICIENT_ROLE" in denied.stderr

    assert cli(legato, "rm", "hello").returncode == 0
    wait_for(lambda: legato.api.get("/services/hello").status_code == 404, what="hello to go")
