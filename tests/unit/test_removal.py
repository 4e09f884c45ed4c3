"""Deleting a service: the reconciler removes its replicas, route and volumes, from a record
in the store, so a removal cut short (an edge error, a crash) is finished later."""

from __future__ import annotations

from typing import Any

from legato.errors import EdgeFailure
from legato.platform import Platform
from legato.reconcile.loop import Reconciler
from legato.runtime.fake import FakeRuntime
from legato.store import Store
from tests.unit.conftest import FakeEdge

IMAGE = "legato-test/busybox:latest"


def spec(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "replicas": 2,
            "volumes": [{"name": "data", "path": "/data"}], **fields}


async def deployed(platform: Platform, runtime: FakeRuntime, name: str = "web") -> None:
    result = await platform.deploy([spec(name)], actor="test")
    assert result.errors == []
    await platform.reconciler.settled(name)
    assert len(await runtime.list_replicas(name)) == 2
    assert (name, "data") in runtime.volumes


async def test_delete_removes_replicas_route_and_volumes(
    platform: Platform, runtime: FakeRuntime, edge: FakeEdge, store: Store
) -> None:
    await deployed(platform, runtime)
    assert await platform.delete("web", keep_data=False, actor="test") == 2
    await platform.reconciler.settled("web")
    assert await runtime.list_replicas("web") == []
    assert runtime.volumes == set()
    assert [r.service for r in edge.routes()] == []
    assert await store.pending_removal("web") is None


async def test_delete_with_keep_data_keeps_volumes(
    platform: Platform, runtime: FakeRuntime, store: Store
) -> None:
    await deployed(platform, runtime)
    await platform.delete("web", keep_data=True, actor="test")
    await platform.reconciler.settled("web")
    assert await runtime.list_replicas("web") == []
    assert runtime.volumes == {("web", "data")}
    assert await store.pending_removal("web") is None


async def test_a_removal_that_failed_stays_pending_and_is_finished_on_retry(
    platform: Platform, runtime: FakeRuntime, edge: FakeEdge, store: Store
) -> None:
    await deployed(platform, runtime)
    edge.apply_error = EdgeFailure("haproxy is reloading")
    await platform.delete("web", keep_data=False, actor="test")
    await platform.reconciler.settled("web")
    assert len(await runtime.list_replicas("web")) == 2  # nothing removed behind the route
    assert await store.pending_removal("web") is not None

    edge.apply_error = None
    platform.reconciler.trigger("web")
    await platform.reconciler.settled("web")
    assert await runtime.list_replicas("web") == []
    assert runtime.volumes == set()
    assert await store.pending_removal("web") is None


async def test_a_removal_cut_short_by_a_crash_is_finished_on_the_next_start(
    platform: Platform, runtime: FakeRuntime, edge: FakeEdge, store: Store
) -> None:
    await deployed(platform, runtime)
    await store.delete_service("web", keep_data=False)  # recorded, then the process died

    reconciler = Reconciler(store, runtime, edge, platform.releases)
    try:
        await reconciler.start()
        await reconciler.settled("web")
        assert await runtime.list_replicas("web") == []
        assert runtime.volumes == set()
        assert await store.pending_removal("web") is None
    finally:
        await reconciler.close()


async def test_deploying_the_name_again_first_finishes_the_old_removal(
    platform: Platform, runtime: FakeRuntime, store: Store
) -> None:
    await deployed(platform, runtime)
    old = {r.id for r in await runtime.list_replicas("web")}
    await store.delete_service("web", keep_data=False)
    await platform.deploy([spec("web", replicas=1)], actor="test")
    await platform.reconciler.settled("web")

    replicas = await runtime.list_replicas("web")
    assert len(replicas) == 1 and not old & {r.id for r in replicas}
    assert await store.pending_removal("web") is None
