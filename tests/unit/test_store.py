"""The SQLite store: services and deployments, events, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from legato.auth import display_prefix, generate_token, hash_token
from legato.crypto import Keyring
from legato.errors import (
    Conflict,
    DeploymentInProgress,
    DeploymentNotFound,
    NotFound,
    ServiceNotFound,
)
from legato.spec import ServiceSpec
from legato.store import Store

IMAGE = "legato-test/busybox:latest"


def spec(**fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "web", "image": IMAGE, **fields})


async def apply(store: Store, s: ServiceSpec) -> Any:
    return await store.apply_spec(s, actor="token:test", reason="deploy")


# services and deployments -------------------------------------------------------------------


async def test_apply_spec_creates_service_and_deployment_1(store: Store) -> None:
    service, deployment = await apply(store, spec(replicas=2, project="shop"))
    assert deployment is not None
    assert (deployment.number, deployment.status, deployment.previous_id) == (1, "pending", None)
    assert (deployment.actor, deployment.reason) == ("token:test", "deploy")
    assert deployment.spec == spec(replicas=2, project="shop")
    assert [s["name"] for s in deployment.steps] == ["queued"]
    assert (service.name, service.project, service.environment) == ("web", "shop", "production")
    assert service.replicas == 2
    assert service.deployment_id == deployment.id
    assert await store.get_service("web") == service
    assert await store.get_deployment(deployment.id) == deployment


async def test_applying_the_same_spec_again_creates_no_deployment(store: Store) -> None:
    _, first = await apply(store, spec())
    service, again = await apply(store, spec())
    assert again is None
    assert service.deployment_id == first.id
    assert [d.number for d in await store.list_deployments("web")] == [1]


async def test_replica_only_change_updates_replicas_without_a_deployment(store: Store) -> None:
    _, first = await apply(store, spec(replicas=1))
    service, deployment = await apply(store, spec(replicas=4))
    assert deployment is None
    assert service.replicas == 4
    assert service.deployment_id == first.id
    assert (await store.get_service("web")).replicas == 4
    assert len(await store.list_deployments("web")) == 1


async def test_image_change_creates_deployment_2_pointing_at_1(store: Store) -> None:
    _, first = await apply(store, spec())
    await store.update_deployment(first.id, status="successful")
    service, second = await apply(store, spec(image="legato-test/busybox:2"))
    assert second is not None
    assert second.number == 2
    assert second.previous_id == first.id
    assert second.spec.image == "legato-test/busybox:2"
    assert service.deployment_id == second.id
    assert [d.number for d in await store.list_deployments("web")] == [2, 1]


async def test_env_change_is_a_new_deployment_too(store: Store) -> None:
    _, first = await apply(store, spec(env={"A": "1"}))
    await store.update_deployment(first.id, status="successful")
    _, second = await apply(store, spec(env={"A": "2"}))
    assert second is not None and second.number == 2


async def test_same_spec_after_a_failed_deployment_retries(store: Store) -> None:
    _, first = await apply(store, spec())
    await store.update_deployment(first.id, status="failed", error="boom")
    _, retry = await apply(store, spec())
    assert retry is not None
    assert (retry.number, retry.previous_id) == (2, first.id)


async def test_same_name_in_another_project_is_service_name_taken(store: Store) -> None:
    await apply(store, spec(project="shop"))
    with pytest.raises(Conflict) as caught:
        await apply(store, spec(project="blog", image="other:1"))
    assert caught.value.code == "SERVICE_NAME_TAKEN"
    assert caught.value.status == 409
    assert caught.value.details == {"name": "web", "project": "shop"}
    service = await store.get_service("web")
    assert service.project == "shop"
    assert len(await store.list_deployments("web")) == 1


async def test_same_name_in_another_environment_is_taken_too(store: Store) -> None:
    await apply(store, spec())
    with pytest.raises(Conflict):
        await apply(store, spec(environment="staging"))


async def test_a_second_deployment_while_one_is_in_flight_is_409(store: Store) -> None:
    _, first = await apply(store, spec(image="a:1"))
    await store.update_deployment(first.id, status="successful")
    _, second = await apply(store, spec(image="a:2"))
    await store.update_deployment(second.id, status="running")
    with pytest.raises(DeploymentInProgress) as caught:
        await apply(store, spec(image="a:3"))
    assert caught.value.status == 409
    assert caught.value.details == {"deployment_id": second.id, "number": 2, "status": "running"}
    with pytest.raises(DeploymentInProgress):
        await store.create_deployment(spec(image="a:3"), actor="t", reason="r")
    assert (await store.get_service("web")).deployment_id == second.id
    assert [d.number for d in await store.list_deployments("web")] == [2, 1]


async def test_supersede_cancels_the_deployment_in_flight_only(store: Store) -> None:
    _, first = await apply(store, spec(image="a:1"))
    await store.update_deployment(first.id, status="successful")
    _, second = await apply(store, spec(image="a:2"))
    await store.update_deployment(second.id, status="running", step="starting")
    _, third = await store.apply_spec(spec(image="a:3"), actor="t", reason="deploy",
                                      supersede=True)
    assert third is not None
    statuses = {d.number: d.status for d in await store.list_deployments("web")}
    assert statuses == {1: "successful", 2: "cancelled", 3: "pending"}
    cancelled = await store.get_deployment(second.id)
    assert cancelled.error == "superseded by deployment #3"
    assert all(step["finished_at"] for step in cancelled.steps)
    assert third.previous_id == second.id
    assert (await store.get_service("web")).deployment_id == third.id


async def test_the_same_spec_while_in_flight_changes_nothing_and_is_no_conflict(
    store: Store,
) -> None:
    _, first = await apply(store, spec(replicas=1))
    service, again = await apply(store, spec(replicas=3))  # a scale is not a deployment
    assert again is None and service.replicas == 3
    assert service.deployment_id == first.id


async def test_apply_spec_restarts_a_stopped_service(store: Store) -> None:
    await apply(store, spec())
    assert (await store.set_stopped("web", True)).desired_replicas == 0
    service, _ = await apply(store, spec())
    assert service.stopped is False


async def test_unknown_service_and_deployment_raise_their_not_found(store: Store) -> None:
    with pytest.raises(ServiceNotFound):
        await store.get_service("nope")
    with pytest.raises(ServiceNotFound):
        await store.set_replicas("nope", 2)
    with pytest.raises(DeploymentNotFound):
        await store.get_deployment("dpl_missing")


async def test_list_services_filters_by_project_and_environment(store: Store) -> None:
    await apply(store, spec(name="api", project="shop"))
    await apply(store, spec(name="web", project="shop", environment="staging"))
    await apply(store, spec(name="blog", project="blog"))
    assert [s.name for s in await store.list_services()] == ["api", "blog", "web"]
    assert [s.name for s in await store.list_services("shop")] == ["api", "web"]
    assert [s.name for s in await store.list_services("shop", "staging")] == ["web"]


async def test_delete_service_removes_its_deployments_and_events(store: Store) -> None:
    _, first = await apply(store, spec())
    await store.add_event("web", "deploy", "started")
    await store.delete_service("web", keep_data=False)
    assert await store.list_services() == []
    with pytest.raises(DeploymentNotFound):
        await store.get_deployment(first.id)
    assert await store.list_events("web") == []
    with pytest.raises(ServiceNotFound):
        await store.delete_service("web", keep_data=False)


async def test_delete_service_records_a_removal_until_finished(store: Store) -> None:
    await apply(store, spec())
    assert await store.pending_removal("web") is None
    await store.delete_service("web", keep_data=True)
    removal = await store.pending_removal("web")
    assert removal is not None and (removal.service, removal.keep_data) == ("web", True)
    assert await store.list_removals() == ["web"]

    # Deployed and deleted again before the first removal ran: the latest keep_data wins.
    await apply(store, spec())
    await store.delete_service("web", keep_data=False)
    removal = await store.pending_removal("web")
    assert removal is not None and removal.keep_data is False

    await store.finish_removal("web")
    assert await store.pending_removal("web") is None
    assert await store.list_removals() == []


async def test_update_deployment_steps_get_timestamps(store: Store) -> None:
    _, deployment = await apply(store, spec())
    queued = deployment.steps[0]
    assert queued["finished_at"] is None
    assert datetime.fromisoformat(queued["started_at"]).tzinfo is not None

    pulling = await store.update_deployment(deployment.id, status="running", step="pulling")
    again = await store.update_deployment(deployment.id, step="pulling")
    assert [s["name"] for s in again.steps] == ["queued", "pulling"]  # same step is not repeated
    queued, step = pulling.steps
    assert queued["finished_at"] is not None
    assert queued["finished_at"] == step["started_at"]  # one step ends where the next begins
    assert step["finished_at"] is None

    done = await store.update_deployment(deployment.id, status="successful", step="done",
                                         image_id="sha256:abc")
    assert [s["name"] for s in done.steps] == ["queued", "pulling", "done"]
    assert all(s["started_at"] and s["finished_at"] for s in done.steps)
    starts = [datetime.fromisoformat(s["started_at"]) for s in done.steps]
    assert starts == sorted(starts)
    assert (done.status, done.image_id) == ("successful", "sha256:abc")


async def test_update_deployment_keeps_fields_it_is_not_given(store: Store) -> None:
    _, deployment = await apply(store, spec())
    await store.update_deployment(deployment.id, status="running", image_id="sha256:abc")
    failed = await store.update_deployment(deployment.id, status="failed", error="no health")
    assert (failed.status, failed.error, failed.image_id) == ("failed", "no health", "sha256:abc")
    assert failed.steps[-1]["finished_at"] is not None  # a terminal status closes the last step


# events -------------------------------------------------------------------------------------


async def test_events_newest_first_with_type_filter_and_before_id(store: Store) -> None:
    added = [
        await store.add_event("web", "deploy", "deployment #1 started", {"n": 1}),
        await store.add_event("web", "scaling", "scaled from 1 to 2", {"n": 2}),
        await store.add_event("other", "deploy", "not mine", {}),
        await store.add_event("web", "deploy", "deployment #1 successful", {"n": 3}),
        await store.add_event("web", "crash", "replica exited", {"n": 4}),
    ]
    ids = [e.id for e in added]
    assert ids == sorted(ids)

    every = await store.list_events("web")
    assert [e.details["n"] for e in every] == [4, 3, 2, 1]
    assert every[0].type == "crash" and every[0].message == "replica exited"

    deploys = await store.list_events("web", type_="deploy")
    assert [e.message for e in deploys] == ["deployment #1 successful", "deployment #1 started"]

    older = await store.list_events("web", before_id=added[3].id)
    assert [e.details["n"] for e in older] == [2, 1]
    assert [e.details["n"] for e in await store.list_events("web", limit=2)] == [4, 3]
    assert await store.list_events("web", since=datetime.now(UTC) + timedelta(hours=1)) == []


async def test_events_since_keeps_events_at_or_after_the_instant(store: Store) -> None:
    event = await store.add_event("web", "deploy", "started")
    assert await store.list_events("web", since=event.created_at - timedelta(minutes=5)) == [event]
    assert await store.list_events("web", since=event.created_at + timedelta(minutes=5)) == []


async def test_events_since_with_a_non_utc_offset_means_the_same_instant(store: Store) -> None:
    event = await store.add_event("web", "deploy", "started")
    plus2 = timezone(timedelta(hours=2))
    before = (event.created_at - timedelta(minutes=5)).astimezone(plus2)
    after = (event.created_at + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=-5)))
    assert await store.list_events("web", since=before) == [event]
    assert await store.list_events("web", since=after) == []


# tokens -------------------------------------------------------------------------------------


async def test_token_create_lookup_by_hash_and_revoke(store: Store) -> None:
    plaintext = generate_token()
    created = await store.create_token(
        name="ci", role="deployer", token_hash=hash_token(plaintext),
        prefix=display_prefix(plaintext), expires_at=None, projects=("shop",),
    )
    assert created.id.startswith("tok_")
    assert (created.name, created.role, created.projects) == ("ci", "deployer", ("shop",))
    assert created.prefix == plaintext[:10] and created.revoked_at is None

    assert await store.token_by_hash(hash_token(plaintext)) == created
    assert await store.token_by_hash(hash_token(generate_token())) is None
    assert await store.token_by_hash(plaintext) is None  # stored hashed, never in clear
    assert await store.count_tokens() == 1

    revoked = await store.revoke_token(created.id)
    assert revoked.revoked_at is not None
    assert (await store.token_by_hash(hash_token(plaintext))) == revoked
    again = await store.revoke_token(created.id)
    assert again.revoked_at == revoked.revoked_at  # revoking twice keeps the first time


async def test_token_expiry_and_last_use_round_trip(store: Store) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    token = await store.create_token(name="t", role="viewer", token_hash="h" * 64,
                                     prefix="lgt_abcdef", expires_at=expires)
    assert token.expires_at == expires
    await store.touch_token(token.id)
    touched = await store.token_by_hash("h" * 64)
    assert touched is not None and touched.last_used_at is not None


async def test_duplicate_token_hash_is_refused(store: Store) -> None:
    await store.create_token(name="a", role="viewer", token_hash="x" * 64, prefix="p",
                             expires_at=None)
    with pytest.raises(Exception, match="UNIQUE"):
        await store.create_token(name="b", role="admin", token_hash="x" * 64, prefix="p",
                                 expires_at=None)
    assert [t.name for t in await store.list_tokens()] == ["a"]


async def test_revoking_an_unknown_token_is_token_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.revoke_token("tok_missing")
    assert caught.value.code == "TOKEN_NOT_FOUND"


# deployment pipeline --------------------------------------------------------------------------


async def successful(store: Store, s: ServiceSpec, image_id: str = "sha256:1") -> Any:
    _, deployment = await apply(store, s)
    return await store.update_deployment(
        deployment.id, status="successful", image_id=image_id,
        fingerprint=s.fingerprint(image_id),
    )


async def test_steps_only_move_forward(store: Store) -> None:
    _, deployment = await apply(store, spec())
    await store.update_deployment(deployment.id, status="running", step="pulling")
    assert await store.advance_step(deployment.id, "starting") is True
    assert await store.advance_step(deployment.id, "starting") is False
    assert await store.advance_step(deployment.id, "pulling") is False  # never back
    assert await store.advance_step(deployment.id, "draining") is True  # may skip ahead
    current = await store.get_deployment(deployment.id)
    assert [s["name"] for s in current.steps] == ["queued", "pulling", "starting", "draining"]
    assert all(s["finished_at"] for s in current.steps[:-1])
    assert current.steps[-1]["finished_at"] is None


async def test_advance_step_of_a_finished_deployment_does_nothing(store: Store) -> None:
    deployment = await successful(store, spec())
    assert await store.advance_step(deployment.id, "draining") is False


async def test_update_with_expect_leaves_a_deployment_that_moved_on_alone(store: Store) -> None:
    _, deployment = await apply(store, spec())
    await store.update_deployment(deployment.id, status="failed", error="boom")
    after = await store.update_deployment(deployment.id, status="successful",
                                          expect=("running",))
    assert (after.status, after.error) == ("failed", "boom")


async def test_finishing_with_a_rollback_records_both_at_once(store: Store) -> None:
    good = await successful(store, spec(image="a:1"), image_id="sha256:a1")
    _, bad = await apply(store, spec(image="a:2"))
    await store.update_deployment(bad.id, status="running", step="health")
    failed, rollback = await store.finish_deployment(
        bad.id, "rolled_back", error="not healthy",
        then=(good.spec.model_copy(update={"replicas": 4}), good, "legato", "rollback to #1"),
    )
    assert (failed.status, failed.error) == ("rolled_back", "not healthy")
    assert failed.steps[-1]["finished_at"] is not None
    assert rollback is not None
    assert (rollback.number, rollback.status, rollback.reason) == (3, "pending", "rollback to #1")
    assert (rollback.image_id, rollback.fingerprint, rollback.rollback_of) == (
        "sha256:a1", good.fingerprint, good.id)
    assert rollback.promoted_at is not None  # no canary phase
    assert rollback.spec.replicas == 4 and rollback.spec.image == "a:1"
    assert (await store.get_service("web")).deployment_id == rollback.id


async def test_finishing_a_deployment_that_already_ended_is_a_conflict(store: Store) -> None:
    deployment = await successful(store, spec())
    with pytest.raises(Conflict) as caught:
        await store.finish_deployment(deployment.id, "failed", error="late")
    assert caught.value.code == "DEPLOYMENT_NOT_ACTIVE"
    assert (await store.get_deployment(deployment.id)).status == "successful"


async def test_last_successful_skips_failed_and_unresolved_ones(store: Store) -> None:
    first = await successful(store, spec(image="a:1"))
    _, second = await apply(store, spec(image="a:2"))
    await store.finish_deployment(second.id, "failed", error="x")
    _, third = await apply(store, spec(image="a:3"))
    found = await store.last_successful("web", before_number=third.number)
    assert found is not None and found.id == first.id
    assert await store.last_successful("web", before_number=first.number) is None


async def test_deployments_by_number_and_paged_by_number(store: Store) -> None:
    for image in ("a:1", "a:2", "a:3"):
        await successful(store, spec(image=image))
    assert (await store.deployment_by_number("web", 2)).spec.image == "a:2"
    with pytest.raises(DeploymentNotFound):
        await store.deployment_by_number("web", 9)
    page = await store.list_deployments("web", before_number=3, limit=1)
    assert [d.number for d in page] == [2]


async def test_deployment_logs_keep_their_order_and_step(store: Store) -> None:
    _, deployment = await apply(store, spec())
    for step, message in (("pulling", "resolving"), ("starting", "started r0"),
                          ("starting", "started r1")):
        await store.add_deployment_log(deployment.id, step, message)
    lines = await store.deployment_logs(deployment.id)
    assert [(line.step, line.message) for line in lines] == [
        ("pulling", "resolving"), ("starting", "started r0"), ("starting", "started r1")]
    await store.delete_service("web", keep_data=False)
    assert await store.deployment_logs(deployment.id) == []


async def test_a_reopened_store_reads_what_the_first_one_wrote(
    store: Store, tmp_path: Any, master_key: bytes
) -> None:
    """Reads come from memory: it must hold exactly what the database holds."""
    deployment = await successful(store, spec(replicas=2))
    await store.set_replicas("web", 5)
    await apply(store, spec(name="api"))
    await store.delete_service("api", keep_data=True)
    again = Store(tmp_path / "db", Keyring(master_key))
    try:
        assert await again.list_services() == await store.list_services()
        assert await again.get_deployment(deployment.id) == await store.get_deployment(
            deployment.id)
        assert await again.list_removals() == ["api"]
        [(service, current)] = await again.list_services_with_deployments()
        assert (service.replicas, current) == (5, deployment)
    finally:
        again.close()
