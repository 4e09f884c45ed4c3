"""Shallow clones with the git CLI: argv lists only, no prompts, no transport helpers, a
timeout, and the output in the build log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from legato.errors import LegatoError, ValidationFailed
from legato.gitevents import valid_branch
from legato.spec import is_local_repository, valid_repository


class GitFailure(LegatoError):
    status = 422
    code = "GIT_FAILED"


def clone_argv(url: str, branch: str, dest: Path, *, allow_local: bool) -> list[str]:
    """The clone command. Every value is validated again here and placed after `--` where
    git takes operands, so none can be read as an option."""
    if not valid_repository(url):
        raise ValidationFailed(f"invalid repository URL {url!r}", code="INVALID_REPOSITORY")
    if is_local_repository(url) and not allow_local:
        raise ValidationFailed(
            "local repositories are disabled (LEGATO_GIT_ALLOW_LOCAL); use a URL",
            code="LOCAL_REPOSITORY_REFUSED", details={"repository": url})
    if not valid_branch(branch):
        raise ValidationFailed(f"invalid branch name {branch!r}", code="INVALID_BRANCH")
    return [
        "git", "-c", "protocol.ext.allow=never",
        "-c", f"protocol.file.allow={'always' if allow_local else 'never'}",
        "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false",
        "clone", "--depth", "1", "--single-branch", "--no-tags", "--branch", branch,
        "--", url, str(dest),
    ]


async def run(argv: list[str], *, cwd: Path | None, timeout_s: float,
              output: Callable[[str], None]) -> str:
    """Run a git command; its output goes to `output` line by line; stdout is returned.
    On timeout its whole process group is killed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd or Path("/nonexistent")),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        "LC_ALL": "C",
    }
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    chunks: list[bytes] = []

    async def pump_err() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            output(raw.decode(errors="replace").rstrip())

    async def pump_out() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            chunks.append(raw)

    try:
        await asyncio.wait_for(asyncio.gather(pump_err(), pump_out(), process.wait()),
                               timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise GitFailure(f"git {argv[argv.index('clone') if 'clone' in argv else 1]} timed out "
                         f"after {timeout_s:g}s") from None
    if process.returncode != 0:
        raise GitFailure(f"git exited with {process.returncode}",
                         details={"exit_code": process.returncode})
    return b"".join(chunks).decode(errors="replace")


async def clone(url: str, branch: str, dest: Path, *, allow_local: bool, timeout_s: float,
                output: Callable[[str], None]) -> str:
    """Clone `branch` of `url` into `dest` (depth 1); the commit it checked out."""
    await run(clone_argv(url, branch, dest, allow_local=allow_local), cwd=dest.parent,
              timeout_s=timeout_s, output=output)
    commit = await run(["git", "-C", str(dest), "rev-parse", "HEAD"], cwd=dest.parent,
                       timeout_s=30, output=output)
    return commit.strip()
