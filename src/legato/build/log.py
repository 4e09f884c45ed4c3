"""Build logs: one file per deployment under the data dir, kept after the build, and followed
live while the build writes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from legato.errors import NotFound

_TAIL = 30


class BuildLog:
    """The output of one build: appended by the builder, read by anyone, followed live."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.done = False
        self._changed = asyncio.Event()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        """Append output (one or more lines); call on the event loop."""
        for line in text.rstrip("\n").split("\n"):
            line = line.rstrip("\r")
            self.lines.append(line)
            self._file.write(line + "\n")
        self._file.flush()
        self._wake()

    def close(self) -> None:
        self.done = True
        self._file.close()
        self._wake()

    def tail(self, count: int = _TAIL) -> str:
        return "\n".join(line for line in self.lines[-count:] if line.strip())

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[str]:
        """Every line so far, then each new one, until the build ends."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.lines):
                yield self.lines[sent]
                sent += 1
            if self.done:
                return
            await changed.wait()


class BuildLogs:
    """The build logs of a Legato installation: live ones in memory, all of them on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._live: dict[str, BuildLog] = {}

    def open(self, deployment_id: str) -> BuildLog:
        """A fresh log for a build that begins (a rebuild after a restart starts it over)."""
        path = self._path(deployment_id)
        path.unlink(missing_ok=True)
        log = self._live[deployment_id] = BuildLog(path)
        return log

    def finish(self, deployment_id: str) -> None:
        log = self._live.pop(deployment_id, None)
        if log is not None:
            log.close()

    def live(self, deployment_id: str) -> BuildLog | None:
        return self._live.get(deployment_id)

    async def read(self, deployment_id: str) -> list[str]:
        live = self._live.get(deployment_id)
        if live is not None:
            return list(live.lines)
        path = self._path(deployment_id)
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no build log for deployment {deployment_id}",
                           code="BUILD_LOG_NOT_FOUND", details={"id": deployment_id}) from None
        return text.splitlines()

    def _path(self, deployment_id: str) -> Path:
        if not deployment_id.replace("_", "").isalnum():  # ids are dpl_<hex>; never a path
            raise NotFound(f"no build log for deployment {deployment_id}",
                           code="BUILD_LOG_NOT_FOUND")
        return self.directory / f"{deployment_id}.log"
