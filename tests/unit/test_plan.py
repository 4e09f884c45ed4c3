"""The planner, table-driven: each case is one observation and the exact plan it must produce.

Replicas are written `<deployment><slot>` (d1 = the old deployment, d2 = the new one) and
health as `healthy`/`starting`/`unhealthy` (absent = starting).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from legato.reconcile.plan import Clear, Desired, Health, Observed, Plan, Resume, Retire, Start, plan
from legato.runtime.base import Replica, ReplicaState

OLD, NEW = "d1", "d2"


def rep(deployment: str, slot: int, state: ReplicaState = "running") -> Replica:
    return Replica(
        id=f"{deployment}-{slot}", name=f"lg-web-{slot}", service="web", deployment=deployment,
        slot=slot, state=state, node="fake-node", host_port=40_000 + slot,
        exit_code=1 if state in ("exited", "dead") else None,
    )


@dataclass(frozen=True)
class Case:
    """What runs (and how it is doing), what is wanted, and what the planner must answer."""

    desired: Desired
    replicas: tuple[Replica, ...] = ()
    health: dict[str, Health] = field(default_factory=dict)
    retiring: frozenset[str] = frozenset()
    backoff: frozenset[int] = frozenset()
    healthy_for: dict[str, float] = field(default_factory=dict)  # absent: healthy for long
    starts: tuple[int, ...] = ()
    retires: tuple[tuple[str, str], ...] = ()  # (replica id, reason)
    clears: tuple[str, ...] = ()
    waiting: tuple[int, ...] = ()
    done: bool = False
    canaries_ready: bool = False
    recheck_in_s: float | None = None

    def run(self) -> Plan:
        healthy_for = {r: self.healthy_for.get(r, 1e9) for r, h in self.health.items()
                       if h == "healthy"}
        return plan(self.desired, Observed(self.replicas, self.health, healthy_for=healthy_for,
                                           retiring=self.retiring, backoff_slots=self.backoff))


def starts(result: Plan) -> list[int]:
    return [a.slot for a in result.actions if isinstance(a, Start)]


def retires(result: Plan) -> list[tuple[str, str]]:
    return [(a.replica.id, a.reason) for a in result.actions if isinstance(a, Retire)]


def clears(result: Plan) -> list[str]:
    return [a.replica.id for a in result.actions if isinstance(a, Clear)]


def healthy(*replicas: Replica) -> dict[str, Health]:
    return {r.id: "healthy" for r in replicas}


def rolling(replicas: int, surge: int = 1, unavailable: int = 0) -> Desired:
    return Desired(NEW, replicas, "rolling", max_surge=surge, max_unavailable=unavailable)


def recreate(replicas: int) -> Desired:
    return Desired(NEW, replicas, "recreate")


def canary(replicas: int, canaries: int = 1, *, promoted: bool = False) -> Desired:
    return Desired(NEW, replicas, "canary", canary=canaries, promoted=promoted)


def settled(desired: Desired, min_healthy_s: float) -> Desired:
    return replace(desired, min_healthy_s=min_healthy_s)


def same_as(desired: Desired, *deployments: str) -> Desired:
    """`desired`, whose target runs exactly what these other deployments run."""
    return replace(desired, current=frozenset(deployments))


def held(desired: Desired) -> Desired:
    return replace(desired, hold=True)


o0, o1, o2 = rep(OLD, 0), rep(OLD, 1), rep(OLD, 2)
n0, n1, n2, n3 = rep(NEW, 0), rep(NEW, 1), rep(NEW, 2), rep(NEW, 3)

CASES: dict[str, Case] = {
    # fresh deploy and scaling -------------------------------------------------------------
    "fresh deploy starts every replica at once": Case(
        rolling(3), starts=(0, 1, 2),
    ),
    "fresh deploy with recreate also starts everything at once": Case(
        recreate(2), starts=(0, 1),
    ),
    "steady state does nothing and is done": Case(
        rolling(2), (n0, n1), healthy(n0, n1), done=True,
    ),
    "scale up starts only the missing slots": Case(
        rolling(4), (n0, n1), healthy(n0, n1), starts=(2, 3),
    ),
    "scale up fills a gap in the slots first": Case(
        rolling(3), (n0, n2), healthy(n0, n2), starts=(1,),
    ),
    "scale down retires the highest slots when all are healthy": Case(
        rolling(2), (n0, n1, n2, n3), healthy(n0, n1, n2, n3),
        retires=((n3.id, "scale_down"), (n2.id, "scale_down")), done=True,
    ),
    "scale down retires replicas that are not healthy before healthy ones": Case(
        rolling(2), (n0, n1, n2, n3), healthy(n0, n2, n3),
        retires=((n1.id, "scale_down"), (n3.id, "scale_down")), done=True,
    ),
    "scale down is not done while a surviving replica is still starting": Case(
        rolling(2), (n0, n1, n2), healthy(n2),
        retires=((n1.id, "scale_down"),),
    ),
    "count 0 retires every replica as stopped": Case(
        rolling(0), (n0, n1), healthy(n0),
        retires=((n1.id, "stopped"), (n0.id, "stopped")), done=True,
    ),
    "count 0 mid-rollout retires the old replicas as well and starts nothing": Case(
        rolling(0), (o0, n0), healthy(o0, n0),
        retires=((n0.id, "stopped"), (o0.id, "stopped")),
    ),
    "count 0 with nothing running is done": Case(
        rolling(0), done=True,
    ),
    # rolling update, max_surge=1 / max_unavailable=0 ----------------------------------------
    "rolling: first step starts one new replica and keeps every old one": Case(
        rolling(3), (o0, o1, o2), healthy(o0, o1, o2), starts=(0,),
    ),
    "rolling: old ones stay while the new one is not healthy yet": Case(
        rolling(3), (o0, o1, o2, n0), healthy(o0, o1, o2),
    ),
    "rolling: once the new one is healthy one old goes and the next new starts": Case(
        rolling(3), (o0, o1, o2, n0), healthy(o0, o1, o2, n0),
        retires=((o2.id, "rollout"),), starts=(1,),
    ),
    "rolling: the last old one goes when every new one is healthy": Case(
        rolling(3), (o0, n0, n1, n2), healthy(o0, n0, n1, n2),
        retires=((o0.id, "rollout"),),
    ),
    "rolling: an unhealthy-looking old replica is retired before healthy old ones": Case(
        rolling(3), (o0, o1, o2, n0), {**healthy(o0, o2, n0), o1.id: "starting"},
        retires=((o1.id, "rollout"),), starts=(1,),
    ),
    "rolling: max_unavailable=1 retires one old at once and may start alongside": Case(
        rolling(2, surge=1, unavailable=1), (o0, o1), healthy(o0, o1),
        retires=((o1.id, "rollout"),), starts=(0, 1),
    ),
    "rolling is done once only healthy new replicas remain": Case(
        rolling(3), (n0, n1, n2), healthy(n0, n1, n2), done=True,
    ),
    "rolling is not done while an old replica remains": Case(
        rolling(2), (o0, n0, n1), healthy(n0, n1), retires=((o0.id, "rollout"),),
    ),
    "rolling is not done while a new replica is still starting": Case(
        rolling(2), (n0, n1), healthy(n0),
    ),
    # nothing old is healthy -------------------------------------------------------------------
    "no healthy old replica: every new replica starts at once": Case(
        rolling(3), (o0, o1), {}, starts=(0, 1, 2),
    ),
    "no healthy old replica: old ones stay until the new ones are healthy": Case(
        rolling(2), (o0, o1, n0, n1), healthy(n0),
    ),
    "no healthy old replica: old ones go once every new one is healthy": Case(
        rolling(2), (o0, o1, n0, n1), healthy(n0, n1),
        retires=((o0.id, "rollout"), (o1.id, "rollout")),
    ),
    # recreate ---------------------------------------------------------------------------------
    "recreate retires the old replicas first and starts nothing": Case(
        recreate(2), (o0, o1), healthy(o0, o1),
        retires=((o0.id, "rollout"), (o1.id, "rollout")),
    ),
    "recreate waits while old replicas are still stopping": Case(
        recreate(2), (o0, o1), healthy(o0, o1), retiring=frozenset({o0.id, o1.id}),
    ),
    "recreate starts the new replicas once the old ones are gone": Case(
        recreate(2), starts=(0, 1),
    ),
    "recreate does not wait for a retiring old replica that already exited": Case(
        recreate(1), (rep(OLD, 0, "exited"),), retiring=frozenset({"d1-0"}), starts=(0,),
    ),
    # exits, health, backoff, retiring -------------------------------------------------------
    "exited replica is cleared and its slot started again": Case(
        rolling(1), (rep(NEW, 0, "exited"),), clears=("d2-0",), starts=(0,),
    ),
    "dead and created replicas are cleared too": Case(
        rolling(2), (rep(NEW, 0, "dead"), rep(NEW, 1, "created")),
        clears=("d2-0", "d2-1"), starts=(0, 1),
    ),
    "unhealthy replica is retired as unhealthy and replaced": Case(
        rolling(2), (n0, n1), {n0.id: "healthy", n1.id: "unhealthy"},
        retires=((n1.id, "unhealthy"),), starts=(1,),
    ),
    "unhealthy old replica is retired as unhealthy, not as rollout": Case(
        rolling(1), (o0, n0), {o0.id: "unhealthy", n0.id: "healthy"},
        retires=((o0.id, "unhealthy"),), done=True,
    ),
    "slot in crash backoff waits instead of starting": Case(
        rolling(3), (n0,), healthy(n0), backoff=frozenset({1}), starts=(2,), waiting=(1,),
    ),
    "crashed slot in backoff is cleared but not restarted yet": Case(
        rolling(1), (rep(NEW, 0, "exited"),), backoff=frozenset({0}),
        clears=("d2-0",), waiting=(0,),
    ),
    "backoff of a slot that is running changes nothing": Case(
        rolling(1), (n0,), healthy(n0), backoff=frozenset({0}), done=True,
    ),
    "retiring replicas get no action and do not fill their slot": Case(
        rolling(2), (n0, n1, rep(NEW, 2, "exited")), {n0.id: "healthy", n1.id: "unhealthy"},
        retiring=frozenset({n1.id, "d2-2"}), starts=(1,),
    ),
    "retiring replicas do not count as old ones still serving": Case(
        rolling(1), (o0, n0), healthy(o0, n0), retiring=frozenset({o0.id}), done=True,
    ),
    # replicas that run what the target runs (rollbacks, routing/policy changes) ----------
    "replicas of an equivalent deployment are kept, not replaced": Case(
        same_as(rolling(3), OLD), (o0, o1, o2), healthy(o0, o1, o2), done=True,
    ),
    "equivalent replicas fill their slots; only the missing one starts": Case(
        same_as(rolling(3), OLD), (o0, o1), healthy(o0, o1), starts=(2,),
    ),
    "a rollback keeps the old version's replicas and drops the failed ones": Case(
        same_as(rolling(2), OLD), (o0, o1, rep("d3", 0)), healthy(o0, o1),
        retires=(("d3-0", "rollout"),),
    ),
    # canary -------------------------------------------------------------------------------
    "canary: the canaries start beside every old replica": Case(
        canary(3, 1), (o0, o1, o2), healthy(o0, o1, o2), starts=(0,),
    ),
    "canary: nothing old goes while the canary is not healthy": Case(
        canary(3, 2), (o0, o1, o2, n0, n1), {**healthy(o0, o1, o2, n0), n1.id: "starting"},
    ),
    "canary: healthy canaries make the deployment promotable, and nothing more": Case(
        canary(3, 2), (o0, o1, o2, n0, n1), healthy(o0, o1, o2, n0, n1), canaries_ready=True,
    ),
    "canary: once promoted the rest rolls like a rolling update": Case(
        canary(3, 2, promoted=True), (o0, o1, o2, n0, n1), healthy(o0, o1, o2, n0, n1),
        starts=(2,), retires=(("d1-2", "rollout"), ("d1-1", "rollout")),
    ),
    "canary: a first deploy (nothing old) has no canary phase": Case(
        canary(2, 1), starts=(0, 1),
    ),
    "canary: more canaries than replicas means all of them": Case(
        canary(1, 3), (o0,), healthy(o0), starts=(0,),
    ),
    # min_healthy_s ------------------------------------------------------------------------
    "min_healthy_s: an old replica stays until the new one has been healthy long enough": Case(
        settled(rolling(1), 5), (o0, n0), healthy(o0, n0), healthy_for={n0.id: 2.0},
        recheck_in_s=3.0,
    ),
    "min_healthy_s: then it goes": Case(
        settled(rolling(1), 5), (o0, n0), healthy(o0, n0), healthy_for={n0.id: 5.0},
        retires=(("d1-0", "rollout"),),
    ),
    "min_healthy_s: a rollout is not done before the new replicas are stable": Case(
        settled(rolling(1), 5), (n0,), healthy(n0), healthy_for={n0.id: 1.0},
        recheck_in_s=4.0,
    ),
    # a failed deployment that holds -------------------------------------------------------
    "hold: healthy replicas of both versions stay and nothing starts": Case(
        held(rolling(3)), (o0, o1, n0), healthy(o0, o1, n0),
    ),
    "hold: an exited replica is cleared and not restarted": Case(
        held(rolling(2)), (o0, rep(NEW, 0, "exited")), healthy(o0), clears=("d2-0",),
    ),
    "hold: an unhealthy replica is retired and not replaced": Case(
        held(rolling(2)), (o0, n0), {**healthy(o0), n0.id: "unhealthy"},
        retires=(("d2-0", "unhealthy"),),
    ),
    "hold with nothing old to protect: the target is retried (crash backoff applies)": Case(
        held(rolling(2)), (rep(NEW, 0, "exited"), n1), healthy(n1), clears=("d2-0",),
        starts=(0,),
    ),
    "hold: stopping the service still retires everything": Case(
        held(rolling(0)), (o0, n0), healthy(o0, n0),
        retires=(("d2-0", "stopped"), ("d1-0", "stopped")),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan(case: Case) -> None:
    result = case.run()
    assert starts(result) == list(case.starts)
    assert retires(result) == list(case.retires)
    assert clears(result) == list(case.clears)
    assert result.waiting_slots == case.waiting
    assert result.rollout_done is case.done
    assert result.canaries_ready is case.canaries_ready
    assert result.recheck_in_s == case.recheck_in_s


def test_switching_is_new_replicas_serving_while_old_ones_remain_after_any_canary_phase() -> None:
    assert plan(rolling(2), Observed((o0, o1, n0), healthy(o0, o1, n0))).switching
    assert not plan(rolling(2), Observed((o0, o1, n0), healthy(o0, o1))).switching  # starting
    assert not plan(rolling(1), Observed((n0,), healthy(n0))).switching  # nothing old left
    assert not plan(canary(2, 1), Observed((o0, o1, n0), healthy(o0, o1, n0))).switching
    assert plan(canary(2, 1, promoted=True), Observed((o0, o1, n0), healthy(o0, o1, n0))).switching


def test_count_0_retires_old_deployment_replicas_as_stopped_too() -> None:
    result = plan(rolling(0), Observed((o0, n0), healthy(o0, n0)))
    assert {reason for _, reason in retires(result)} == {"stopped"}


def test_canary_rollout_converges_without_losing_capacity() -> None:
    """Replay a canary deployment through promotion: canaries join, nothing old goes before
    promotion, and the service never has fewer than 3 healthy replicas."""
    running: dict[str, Replica] = {r.id: r for r in (o0, o1, o2)}
    health: dict[str, Health] = healthy(o0, o1, o2)
    desired = canary(3, 1)
    promoted_after = None
    for step in range(20):
        result = plan(desired, Observed(tuple(running.values()), health,
                                        healthy_for=dict.fromkeys(health, 60.0)))
        if result.rollout_done:
            break
        assert sum(1 for s in health.values() if s == "healthy") >= 3
        if result.canaries_ready:
            assert not desired.promoted and not retires(result)
            desired, promoted_after = replace(desired, promoted=True), step
            continue
        if not desired.promoted:
            assert not retires(result)
        for action in result.actions:
            if isinstance(action, Retire):
                del running[action.replica.id]
                health.pop(action.replica.id, None)
            elif isinstance(action, Start):
                running[f"{NEW}-{action.slot}"] = rep(NEW, action.slot)
        health.update({r.id: "healthy" for r in running.values()})
    else:
        pytest.fail("the canary rollout never finished")
    assert promoted_after is not None
    assert sorted(running) == ["d2-0", "d2-1", "d2-2"]


def test_plan_is_pure_and_repeatable() -> None:
    observed = Observed((o0, o1, o2, n0), healthy(o0, o1, o2, n0))
    assert plan(rolling(3), observed) == plan(rolling(3), observed)


def test_rolling_update_converges_step_by_step() -> None:
    """Replay a whole 3-replica rollout, applying each plan: never fewer than 3 healthy."""
    running: dict[str, Replica] = {r.id: r for r in (o0, o1, o2)}
    health: dict[str, Health] = healthy(o0, o1, o2)
    desired = rolling(3)
    for _ in range(20):
        result = plan(desired, Observed(tuple(running.values()), health,
                                        healthy_for=dict.fromkeys(health, 60.0)))
        if result.rollout_done:
            break
        assert sum(1 for s in health.values() if s == "healthy") >= 3
        assert len(running) <= 4  # max_surge=1
        for action in result.actions:
            if isinstance(action, Retire):
                del running[action.replica.id]
                health.pop(action.replica.id, None)
            elif isinstance(action, Start):
                running[f"{NEW}-{action.slot}"] = rep(NEW, action.slot)
        # every replica started in this step becomes healthy before the next observation
        health.update({r.id: "healthy" for r in running.values()})
    else:
        pytest.fail("the rollout never finished")
    assert sorted(running) == ["d2-0", "d2-1", "d2-2"]


# sleep and wake -----------------------------------------------------------------------------


def sleep_plan(desired: Desired, replicas: tuple[Replica, ...], sleepers: set[str],
               health: dict[str, Health] | None = None,
               retiring: frozenset[str] = frozenset()) -> Plan:
    return plan(desired, Observed(replicas, health or {}, retiring=retiring,
                                  sleepers=frozenset(sleepers)))


def resumes(result: Plan) -> list[str]:
    return [a.replica.id for a in result.actions if isinstance(a, Resume)]


def test_asleep_every_running_replica_retires_for_sleep_and_nothing_starts() -> None:
    a, b = rep(NEW, 0), rep(NEW, 1)
    result = sleep_plan(replace(rolling(2), asleep=True), (a, b), set(), healthy(a, b))
    assert retires(result) == [(a.id, "sleep"), (b.id, "sleep")]
    assert starts(result) == [] and resumes(result) == [] and not result.rollout_done


def test_asleep_the_stopped_sleepers_are_kept_and_other_exited_replicas_cleared() -> None:
    slept, crashed = rep(NEW, 0, "exited"), rep(OLD, 1, "exited")
    result = sleep_plan(replace(rolling(2), asleep=True), (slept, crashed), {slept.id})
    assert clears(result) == [crashed.id]
    assert retires(result) == [] and starts(result) == []


def test_awake_the_sleepers_resume_in_their_slots_instead_of_new_replicas() -> None:
    a, b = rep(NEW, 0, "exited"), rep(NEW, 1, "exited")
    result = sleep_plan(rolling(2), (a, b), {a.id, b.id})
    assert sorted(resumes(result)) == [a.id, b.id]
    assert starts(result) == [] and clears(result) == []
    assert not result.rollout_done  # resumed replicas still have to pass their checks


def test_awake_with_more_replicas_wanted_than_slept_the_rest_start() -> None:
    a = rep(NEW, 0, "exited")
    result = sleep_plan(rolling(3, surge=3), (a,), {a.id})
    assert resumes(result) == [a.id]
    assert starts(result) == [1, 2]


def test_awake_sleepers_beyond_the_count_wanted_are_cleared_without_a_crash() -> None:
    a, b = rep(NEW, 0, "exited"), rep(NEW, 1, "exited")
    result = sleep_plan(rolling(1), (a, b), {a.id, b.id})
    assert resumes(result) == [a.id]
    [cleared] = [x for x in result.actions if isinstance(x, Clear)]
    assert (cleared.replica.id, cleared.crashed) == (b.id, False)


def test_a_sleeper_whose_slot_runs_again_is_cleared_and_a_crashed_one_counts_as_a_crash() -> None:
    running, slept, crashed = rep(NEW, 0), rep(NEW, 0, "exited"), rep(NEW, 1, "exited")
    slept = replace(slept, id="d2-0-slept")
    result = sleep_plan(rolling(2), (running, slept, crashed), {slept.id}, healthy(running))
    assert resumes(result) == []
    assert {(x.replica.id, x.crashed) for x in result.actions if isinstance(x, Clear)} == {
        (slept.id, False), (crashed.id, True)}
    assert starts(result) == [1]


def test_sleepers_of_an_older_version_are_not_resumed() -> None:
    slept = rep(OLD, 0, "exited")
    result = sleep_plan(rolling(1), (slept,), {slept.id})
    assert resumes(result) == [] and starts(result) == [0]
    assert [(x.replica.id, x.crashed) for x in result.actions if isinstance(x, Clear)] == [
        (slept.id, False)]


def test_a_replica_still_stopping_for_sleep_is_left_to_its_retirement() -> None:
    a = rep(NEW, 0)
    result = sleep_plan(replace(rolling(1), asleep=True), (a,), set(), healthy(a),
                        retiring=frozenset({a.id}))
    assert result.actions == ()
