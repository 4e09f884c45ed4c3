"""Deployments through the API on the fake runtime: the pipeline and its steps, rolling and
canary rollouts, promotion, failure with and without rollback, rollback, one deployment at a
time, in-place changes. Health probes are answered by a table the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from legato.platform import Platform
from legato.runtime.fake import FakeRuntime
from tests.unit.conftest import FAST, IMAGE, IMAGE_2, Api, Probes, Tokens, bearer, eventually


@pytest.fixture
async def api(client: httpx.AsyncClient, tokens: Tokens,
              runtime: FakeRuntime) -> AsyncIterator[Api]:
    runtime.images.add(IMAGE_2)
    yield Api(client, bearer(tokens.deployer))


async def replica_ids(runtime: FakeRuntime) -> set[str]:
    return {r.id for r in await runtime.list_replicas("web") if r.running}


async def settle(runtime: FakeRuntime, deployment_id: str, count: int) -> set[str]:
    """Wait until exactly `count` running replicas remain and they are all of that deployment."""
    async def done() -> set[str] | None:
        running = [r for r in await runtime.list_replicas("web") if r.running]
        ok = len(running) == count and all(r.deployment == deployment_id for r in running)
        return {r.id for r in running} if ok else None
    found: set[str] = await eventually(done, 10, f"{count} replicas of {deployment_id}")
    return found


# the pipeline -----------------------------------------------------------------------------


async def test_a_first_deployment_goes_through_its_steps_and_logs_them(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    deployment_id = await api.deploy()
    done = await api.until(deployment_id, "successful")
    assert [s["name"] for s in done["steps"]] == ["queued", "pulling", "starting", "health", "done"]
    assert all(s["started_at"] and s["finished_at"] for s in done["steps"])
    assert done["image_id"].startswith("sha256:") and done["fingerprint"].startswith("fp_")
    logs = await api.call("GET", f"/deployments/{deployment_id}/logs", 200)
    by_step = {s["name"]: [line["message"] for line in s["logs"]] for s in logs["steps"]}
    assert any("is sha256:" in m for m in by_step["pulling"])
    assert sum("started lg-fake-web" in m for m in by_step["starting"]) == 2
    assert sum("is healthy" in m for m in by_step["health"]) == 2
    assert by_step["done"] == ["2 replica(s) healthy; deployment #1 successful"]
    text = await api.http.get(f"/api/v1/deployments/{deployment_id}/logs",
                              params={"format": "text"}, headers=api.headers)
    assert "[pulling] resolving image legato-test/busybox:latest" in text.text


async def test_a_rolling_deployment_replaces_every_replica_and_records_its_steps(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    old = await settle(runtime, first, 2)
    second = await api.deploy(image=IMAGE_2)
    done = await api.until(second, "successful")
    new = await settle(runtime, second, 2)
    assert not old & new
    assert [s["name"] for s in done["steps"]] == [
        "queued", "pulling", "starting", "health", "switching", "draining", "done"]
    events = await api.call("GET", "/services/web/events", 200, params={"type": "deploy"})
    assert "deployment #2: draining" in [e["message"] for e in events["items"]]


async def test_a_change_of_routing_only_keeps_every_replica(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    before = await settle(runtime, first, 2)
    second = await api.deploy(domains=["shop.example.com"], health_check={**FAST, "path": "/"})
    done = await api.until(second, "successful")
    assert done["fingerprint"] == (await api.deployment(first))["fingerprint"]
    assert await replica_ids(runtime) == before  # nothing restarted
    route = await eventually(
        lambda: _route(api), 5, "the route to carry the new domain")
    assert route == ("shop.example.com",)


async def _route(api: Api) -> tuple[str, ...] | None:
    platform: Platform = api.http._transport.app.state.platform  # type: ignore[attr-defined]
    route = platform.reconciler.route_of("web")
    return route.domains if route and route.domains == ("shop.example.com",) else None


async def test_a_restart_replaces_every_replica_even_though_nothing_changed(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    before = await settle(runtime, first, 2)
    restart = await api.call("POST", "/services/web/restart", 202)
    await api.until(restart["deployment_id"], "successful")
    after = await settle(runtime, restart["deployment_id"], 2)
    assert not before & after


# one at a time ----------------------------------------------------------------------------


async def test_a_second_deployment_while_one_runs_is_409_unless_superseded(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    probes.fail_new = True  # the next deployment never gets healthy
    second = await api.deploy(image=IMAGE_2, deploy={"progress_deadline_s": 60})
    await api.until(second, "running")

    conflict = await api.http.post("/api/v1/services/web/deployments", headers=api.headers,
                                   json={"env": {"A": "1"}})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "DEPLOYMENT_IN_PROGRESS"
    assert conflict.json()["details"]["deployment_id"] == second
    restart = await api.http.post("/api/v1/services/web/restart", headers=api.headers)
    assert restart.status_code == 409
    payload = await api.http.post("/api/v1/deploy", headers=api.headers, json={"services": [
        {"name": "web", "image": IMAGE, "replicas": 2, "health_check": FAST, "env": {"A": "2"}}]})
    assert payload.status_code == 409
    assert payload.json()["code"] == "DEPLOYMENT_IN_PROGRESS"
    assert payload.json()["details"]["errors"][0]["details"]["deployment_id"] == second

    probes.fail_new = False
    probes.failing_ports.clear()
    third = await api.call("POST", "/services/web/deployments?supersede=true", 202,
                           json={"image": IMAGE})
    cancelled = await api.deployment(second)
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == f"superseded by deployment #{third['number']}"
    await api.until(third["deployment_id"], "successful")


# canary -----------------------------------------------------------------------------------


async def test_a_canary_waits_for_promotion_then_rolls_the_rest(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=3)
    await api.until(first, "successful")
    old = await settle(runtime, first, 3)
    canary = {"strategy": "canary", "canary": 1}
    second = await api.deploy(replicas=3, image=IMAGE_2, deploy=canary)
    waiting = await api.until(second, "awaiting_promotion")
    assert waiting["step"] == "promoting"
    running = {r.id: r for r in await runtime.list_replicas("web") if r.running}
    assert old <= set(running)  # every old replica still serves beside the canary
    assert sum(1 for r in running.values() if r.deployment == second) == 1
    await asyncio.sleep(0.3)
    assert (await api.deployment(second))["status"] == "awaiting_promotion"  # no deadline here

    promoted = await api.call("POST", "/services/web/promote", 202)
    assert promoted["deployment_id"] == second
    await api.until(second, "successful")
    assert not old & await settle(runtime, second, 3)
    again = await api.http.post(f"/api/v1/deployments/{second}/promote", headers=api.headers)
    assert again.status_code == 409 and again.json()["code"] == "DEPLOYMENT_NOT_ACTIVE"


async def test_auto_promote_promotes_once_the_canaries_are_healthy(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    second = await api.deploy(image=IMAGE_2, deploy={"strategy": "canary", "canary": 1,
                                                     "auto_promote": True, "min_healthy_s": 0.2})
    done = await api.until(second, "successful")
    assert done["promoted_at"] is not None
    events = await api.call("GET", "/services/web/events", 200, params={"type": "deploy"})
    assert any("promoted by auto_promote" in e["message"] for e in events["items"])


async def test_promote_is_refused_before_the_canaries_are_healthy_or_without_a_canary(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    no_canary = await api.http.post("/api/v1/services/web/promote", headers=api.headers)
    assert no_canary.status_code == 409  # #1 is over
    probes.fail_new = True
    second = await api.deploy(image=IMAGE_2, deploy={"strategy": "canary", "canary": 1})
    await api.until(second, "running")
    early = await api.http.post(f"/api/v1/deployments/{second}/promote", headers=api.headers)
    assert early.status_code == 400 and early.json()["code"] == "CANARIES_NOT_READY"


async def test_failing_a_canary_restores_the_old_version_without_restarting_it(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=2)
    await api.until(first, "successful")
    old = await settle(runtime, first, 2)
    second = await api.deploy(image=IMAGE_2, deploy={"strategy": "canary", "canary": 1})
    await api.until(second, "awaiting_promotion")

    await api.call("POST", f"/deployments/{second}/fail", 202)
    failed = await api.deployment(second)
    assert (failed["status"], failed["error"]) == ("rolled_back", "failed by token:unit-deployer")
    current = await api.current()
    assert current["number"] == 3 and current["reason"] == "rollback to #1 (#2 failed)"
    await api.until(current["id"], "successful")
    assert await settle(runtime, first, 2) == old  # the old replicas were kept throughout


# failure ----------------------------------------------------------------------------------


async def test_replicas_that_keep_crashing_fail_the_deployment_and_it_rolls_back(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=1)
    await api.until(first, "successful")
    old = await settle(runtime, first, 1)
    runtime.start_error = None
    second = await api.deploy(replicas=1, image=IMAGE_2)

    async def crash_new() -> None:
        while True:
            for replica in await runtime.list_replicas("web"):
                if replica.deployment == second and replica.running:
                    runtime.crash(replica.id)
            await asyncio.sleep(0.01)

    crasher = asyncio.create_task(crash_new())
    try:
        failed = await api.until(second, "rolled_back", "failed", timeout=20)
    finally:
        crasher.cancel()
    assert (failed["status"], failed["error"]) == ("rolled_back", "new replicas keep failing")
    rollback = await api.current()
    await api.until(rollback["id"], "successful")
    assert await settle(runtime, first, 1) == old


async def test_a_deployment_that_never_gets_healthy_fails_at_its_deadline(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=1)
    await api.until(first, "successful")
    probes.fail_new = True
    second = await api.deploy(replicas=1, image=IMAGE_2,
                              health_check={**FAST, "failure_threshold": 100},
                              deploy={"progress_deadline_s": 0.5})
    failed = await api.until(second, "rolled_back", timeout=10)
    assert failed["error"] == "not healthy within progress_deadline_s=0.5"


async def test_without_auto_rollback_a_failed_deployment_holds(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=2)
    await api.until(first, "successful")
    old = await settle(runtime, first, 2)
    probes.fail_new = True
    second = await api.deploy(replicas=2, image=IMAGE_2,
                              health_check={**FAST, "failure_threshold": 100},
                              deploy={"progress_deadline_s": 0.5, "auto_rollback": False})
    failed = await api.until(second, "failed", timeout=10)
    assert failed["error"] == "not healthy within progress_deadline_s=0.5"
    assert (await api.current())["id"] == second
    assert (await api.call("GET", "/services/web", 200))["status"] == "failed"
    await asyncio.sleep(0.3)
    assert old <= await replica_ids(runtime)  # the old version keeps serving


async def test_a_missing_image_fails_a_first_deployment_with_nothing_to_restore(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    deployment_id = await api.deploy(image="legato-test/nope:1")
    failed = await api.until(deployment_id, "failed")
    assert failed["error"].startswith("image not found: legato-test/nope:1")
    assert await runtime.list_replicas("web") == []


# rollback ---------------------------------------------------------------------------------


async def test_rollback_goes_to_the_last_successful_deployment_before_the_current(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    second = await api.deploy(image=IMAGE_2)
    await api.until(second, "successful")
    replicas_2 = await settle(runtime, second, 2)

    rollback = await api.call("POST", "/services/web/rollback", 202)
    done = await api.until(rollback["deployment_id"], "successful")
    original = await api.deployment(first)
    assert (done["reason"], done["rollback_of"]) == ("rollback to #1", first)
    assert (done["image_id"], done["fingerprint"]) == (original["image_id"],
                                                      original["fingerprint"])
    assert done["spec"]["image"] == IMAGE
    assert "promoting" not in [s["name"] for s in done["steps"]]  # no canary phase
    assert not replicas_2 & await settle(runtime, rollback["deployment_id"], 2)

    # --to N: exactly that revision; the one just left behind is #2.
    back = await api.call("POST", "/services/web/rollback", 202, json={"to": 2})
    assert (await api.until(back["deployment_id"], "successful"))["spec"]["image"] == IMAGE_2


async def test_rollback_to_a_deployment_id_and_its_errors(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    nothing = await api.http.post("/api/v1/services/web/rollback", headers=api.headers)
    assert nothing.status_code == 404
    first = await api.deploy()
    await api.until(first, "successful")
    none_before = await api.http.post("/api/v1/services/web/rollback", headers=api.headers)
    assert none_before.status_code == 400 and none_before.json()["code"] == "NO_ROLLBACK_TARGET"
    missing = await api.http.post("/api/v1/services/web/rollback", headers=api.headers,
                                  json={"to": 9})
    assert missing.status_code == 404 and missing.json()["code"] == "DEPLOYMENT_NOT_FOUND"
    second = await api.deploy(image="legato-test/nope:1")  # never resolves its image
    await api.until(second, "rolled_back")
    unresolved = await api.http.post(f"/api/v1/deployments/{second}/rollback",
                                     headers=api.headers)
    assert unresolved.status_code == 400 and unresolved.json()["code"] == "NOT_ROLLBACKABLE"
    again = await api.call("POST", f"/deployments/{first}/rollback", 202)
    assert (await api.until(again["deployment_id"], "successful"))["rollback_of"] == first


async def test_deployments_are_listed_newest_first_with_a_cursor(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    for image in (IMAGE, IMAGE_2, IMAGE):
        await api.until(await api.deploy(image=image), "successful")
    page = await api.call("GET", "/services/web/deployments", 200, params={"limit": 2})
    assert [d["number"] for d in page["items"]] == [3, 2]
    rest = await api.call("GET", "/services/web/deployments", 200,
                          params={"limit": 2, "cursor": page["next_cursor"]})
    assert [d["number"] for d in rest["items"]] == [1] and rest["next_cursor"] is None


async def test_viewers_read_deployments_but_cannot_change_them(
    client: httpx.AsyncClient, tokens: Tokens, api: Api, probes: Probes
) -> None:
    first = await api.deploy()
    await api.until(first, "successful")
    viewer = bearer(tokens.viewer)
    assert (await client.get(f"/api/v1/deployments/{first}", headers=viewer)).status_code == 200
    assert (await client.get(f"/api/v1/deployments/{first}/logs",
                             headers=viewer)).status_code == 200
    for path in (f"/deployments/{first}/promote", f"/deployments/{first}/fail",
                 f"/deployments/{first}/rollback", "/services/web/promote",
                 "/services/web/rollback", "/services/web/deployments"):
        response = await client.post(f"/api/v1{path}", headers=viewer)
        assert response.status_code == 403, path


async def test_recreate_never_runs_both_versions_at_once(
    api: Api, probes: Probes, runtime: FakeRuntime
) -> None:
    first = await api.deploy(replicas=2)
    await api.until(first, "successful")
    second = await api.deploy(replicas=2, image=IMAGE_2, deploy={"strategy": "recreate"})
    mixed = False

    async def watch() -> None:
        nonlocal mixed
        while True:
            running = {r.deployment for r in await runtime.list_replicas("web") if r.running}
            mixed = mixed or running == {first, second}
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        await api.until(second, "successful")
    finally:
        watcher.cancel()
    assert not mixed
    await settle(runtime, second, 2)


async def test_an_old_replica_going_unhealthy_is_no_failure_of_the_new_deployment(
    api: Api, probes: Probes, runtime: FakeRuntime, platform: Platform
) -> None:
    first = await api.deploy(replicas=2)
    await api.until(first, "successful")
    old = await runtime.list_replicas("web")
    # min_healthy_s keeps the old replicas beside the new ones while they turn unhealthy.
    second = await api.deploy(replicas=2, image=IMAGE_2, deploy={"min_healthy_s": 0.6})
    await api.until(second, "running")
    probes.failing_ports |= {r.host_port or 0 for r in old}
    await api.until(second, "successful")
    events = await api.call("GET", "/services/web/events", 200, params={"type": "health"})
    assert any("is unhealthy; replacing it" in e["message"] for e in events["items"])
    # Slot failures (crash backoff, "keeps failing") belong to the replicas that run the
    # target; the old version's sickness must not count against it.
    state = platform.reconciler._state["web"]
    assert not any(dep == second for dep, _ in state.slots)
