"""`legato server`: the API, the reconciler and the edge manager in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

import uvicorn

from legato.api.app import create_app
from legato.auth import bootstrap_admin
from legato.config import Settings
from legato.crypto import Keyring, load_master_key
from legato.edge.haproxy import HAProxyEdge
from legato.errors import LegatoError
from legato.platform import Platform
from legato.runtime.docker import DockerRuntime
from legato.store import Store

log = logging.getLogger("legato")


def build_platform(settings: Settings) -> Platform:
    if settings.database_url and not settings.database_url.startswith("sqlite:///"):
        raise LegatoError(
            f"unsupported LEGATO_DATABASE_URL {settings.database_url.split(':')[0]}:...; "
            "this build stores state in SQLite (sqlite:///path)",
            code="CONFIG_INVALID",
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = Keyring(load_master_key(settings.master_key, settings.master_key_file))
    store = Store(settings.database_path, keyring)
    runtime = DockerRuntime(settings.instance, settings.docker_host)
    edge = HAProxyEdge(
        settings.edge_dir, host=settings.edge_host, http_port=settings.edge_http_port,
        binary=settings.haproxy_bin, waker=settings.wake_socket,
        access_log=settings.access_log_socket if settings.access_log else None,
    )
    return Platform(settings, store, runtime, edge)


async def serve(settings: Settings) -> None:
    platform = build_platform(settings)
    token = await bootstrap_admin(platform.store, settings.data_dir, settings.bootstrap_token)
    await platform.start()
    # What exists now (modules, schemas, the loaded state) lives as long as the process: keep
    # it out of the collector's full passes, which otherwise stall the loop ~30 ms each.
    gc.freeze()
    config = uvicorn.Config(
        create_app(platform), host=settings.api_host, port=settings.api_port,
        log_level=settings.log_level, access_log=False, lifespan="off", server_header=False,
        ws="wsproto",  # refuses an unauthenticated WebSocket with a clean HTTP answer
    )
    server = uvicorn.Server(config)
    print(f"Legato API   {settings.api_url}/api/v1  (docs: {settings.api_url}/docs)", flush=True)
    print(f"Legato edge  {platform.edge.url}", flush=True)
    if token:
        print(f"Admin token  {token}", flush=True)
        print(f"             (shown once; also in {settings.data_dir / 'admin-token'})", flush=True)
    try:
        await server.serve()
    finally:
        # The edge keeps serving: HAProxy is its own daemon, adopted on the next start.
        await platform.close()


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except LegatoError as exc:
        print(f"legato: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from exc
