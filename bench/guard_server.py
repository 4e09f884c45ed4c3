"""`legato server`, serving its API twice over one platform: with its guards (tokens, rate
limits, activity trail, idempotency) on LEGATO_API_PORT, and without them on
BENCH_UNGUARDED_PORT (both on 127.0.0.1), so that bench/guard_overhead.py can measure what the
guards cost on the same process, state and route. Benchmark tooling: no setting of Legato
itself serves an unguarded API."""

from __future__ import annotations

import asyncio
import os

import uvicorn

from legato.api.app import create_app
from legato.auth import bootstrap_admin
from legato.config import Settings
from legato.server import build_platform


async def main() -> None:
    settings = Settings()
    platform = build_platform(settings)
    await bootstrap_admin(platform.store, settings.data_dir, settings.bootstrap_token)
    await platform.start()
    servers = [
        uvicorn.Server(uvicorn.Config(
            create_app(platform, guards=guards), host="127.0.0.1", port=port,
            log_level="warning", access_log=False, lifespan="off", server_header=False))
        for guards, port in ((True, settings.api_port),
                             (False, int(os.environ["BENCH_UNGUARDED_PORT"])))
    ]
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        await platform.close()


if __name__ == "__main__":
    asyncio.run(main())
