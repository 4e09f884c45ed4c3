"""The planner, table-driven: each case is one observation and the exact plan it must produce.

Replicas are written `<deployment><slot>` (d1 = the old deployment, d2 = the new one) and
health as `healthy`/`starting`/`unhealthy` (absent = starting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from legato.reconcile.plan import Clear, Desired, Health, Observed, Plan, Retire, Start, plan
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
    starts: tuple[int, ...] = ()
    retires: tuple[tuple[str, str], ...] = ()  # (replica id, reason)
    clears: tuple[str, ...] = ()
    waiting: tuple[int, ...] = ()
    done: bool = False

    def run(self) -> Plan:
        return plan(self.desired, Observed(self.replicas, self.health, self.retiring, self.backoff))


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
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan(case: Case) -> None:
    result = case.run()
    assert starts(result) == list(case.starts)
    assert retires(result) == list(case.retires)
    assert clears(result) == list(case.clears)
    assert result.waiting_slots == case.waiting
    assert result.rollout_done is case.done


def test_count_0_retires_old_deployment_replicas_as_stopped_too() -> None:
    result = plan(rolling(0), Observed((o0, n0), healthy(o0, n0)))
    assert {reason for _, reason in retires(result)} == {"stopped"}


def test_plan_is_pure_and_repeatable() -> None:
    observed = Observed((o0, o1, o2, n0), healthy(o0, o1, o2, n0))
    assert plan(rolling(3), observed) == plan(rolling(3), observed)


def test_rolling_update_converges_step_by_step() -> None:
    """Replay a whole 3-replica rollout, applying each plan: never fewer than 3 healthy."""
    running: dict[str, Replica] = {r.id: r for r in (o0, o1, o2)}
    health: dict[str, Health] = healthy(o0, o1, o2)
    desired = rolling(3)
    for _ in range(20):
        result = plan(desired, Observed(tuple(running.values()), health))
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
