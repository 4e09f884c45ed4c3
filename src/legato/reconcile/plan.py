"""The planner: desired state + what runs -> the actions that converge them. Pure: no IO.

Like Nomad's reconciler it only decides; `loop.py` carries the actions out. A rollout keeps
old replicas until new ones are healthy (`max_surge`/`max_unavailable`, and for
`min_healthy_s`), so a deployment that never gets healthy leaves the old version serving.
Replicas of any deployment that runs exactly what the target runs (`Desired.current`) count
as the target's: a rollback or a change of routing or policy adopts them instead of
restarting them.

A sleeping service (scaled to zero while idle) has its replicas stopped but kept: waking
starts those same containers again, which is faster than creating new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from legato.runtime.base import Replica

Health = Literal["starting", "healthy", "unhealthy"]
Strategy = Literal["rolling", "canary", "recreate"]
RetireReason = Literal["scale_down", "rollout", "unhealthy", "stopped", "sleep"]


@dataclass(frozen=True)
class Start:
    slot: int


@dataclass(frozen=True)
class Retire:
    """Take a replica out of the route, let it finish its requests, stop and remove it (for
    `sleep`, stop and keep it)."""

    replica: Replica
    reason: RetireReason


@dataclass(frozen=True)
class Clear:
    """Remove a replica that is no longer running (it exited or never started; `crashed`
    unless it was stopped for sleeping and is not needed again)."""

    replica: Replica
    crashed: bool = True


@dataclass(frozen=True)
class Resume:
    """Start a replica again that was stopped for sleeping."""

    replica: Replica


Action = Start | Retire | Clear | Resume


@dataclass(frozen=True)
class Desired:
    deployment: str
    replicas: int
    strategy: Strategy = "rolling"
    max_surge: int = 1
    max_unavailable: int = 0
    canary: int = 0  # canaries to run beside the old version until promoted
    promoted: bool = True  # the canary phase is over (or there never was one)
    min_healthy_s: float = 0.0  # how long a new replica is healthy before old ones go for it
    hold: bool = False  # failed and stays: while old replicas serve, start nothing new
    current: frozenset[str] = frozenset()  # other deployments that run what this one runs
    asleep: bool = False  # scaled to zero while idle: stop the replicas, keep them for waking


@dataclass(frozen=True)
class Observed:
    replicas: tuple[Replica, ...]
    health: Mapping[str, Health] = field(default_factory=dict)
    healthy_for: Mapping[str, float] = field(default_factory=dict)  # seconds, healthy ones
    retiring: frozenset[str] = frozenset()
    backoff_slots: frozenset[int] = frozenset()
    sleepers: frozenset[str] = frozenset()  # stopped replicas kept while the service sleeps


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    waiting_slots: tuple[int, ...] = ()  # slots held back by crash backoff
    rollout_done: bool = False
    canaries_ready: bool = False  # in the canary phase, every canary is healthy: promotable
    recheck_in_s: float | None = None  # a replica becomes stable then: plan again
    switching: bool = False  # traffic moves: new replicas serve while old ones still do or go

    def of(self, kind: type[Action]) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]


def plan(desired: Desired, observed: Observed) -> Plan:
    """What to do now so that `desired` runs; safe to call again with the next observation."""
    actions: list[Action] = []
    live: list[Replica] = []
    ours = desired.current | {desired.deployment}
    sleeping = {r.id for r in observed.replicas if r.id in observed.sleepers and r.gone}
    if desired.asleep:
        for replica in observed.replicas:
            if replica.id in observed.retiring or replica.id in sleeping:
                continue
            if replica.gone or replica.state == "created":
                actions.append(Clear(replica))
            else:
                actions.append(Retire(replica, "sleep"))
        return Plan(tuple(actions))
    # Awake: this version's sleepers start again, as many as are wanted; the rest go.
    running = [r for r in observed.replicas
               if r.deployment in ours and not r.gone and r.id not in observed.retiring]
    taken = {r.slot for r in running}
    resumed: list[Replica] = []
    for replica in sorted(observed.replicas, key=lambda r: r.slot):
        if (replica.id in sleeping and replica.deployment in ours and replica.slot not in taken
                and len(running) + len(resumed) < desired.replicas):
            resumed.append(replica)
            taken.add(replica.slot)
    actions.extend(Resume(r) for r in resumed)
    woken = {r.id for r in resumed}
    for replica in observed.replicas:
        if replica.id in observed.retiring or replica.id in woken:
            continue
        if replica.gone or replica.state == "created":
            actions.append(Clear(replica, crashed=replica.id not in sleeping))
        elif observed.health.get(replica.id) == "unhealthy":
            actions.append(Retire(replica, "unhealthy"))
        else:
            live.append(replica)
    live.extend(resumed)  # they count as starting replicas of the target

    def healthy(replica: Replica) -> bool:
        return observed.health.get(replica.id) == "healthy"

    def stable(replica: Replica) -> bool:
        return healthy(replica) and observed.healthy_for.get(replica.id, 0.0) >= desired.min_healthy_s

    new = [r for r in live if r.deployment in ours]
    old = [r for r in live if r.deployment not in ours]
    count = desired.replicas
    down: RetireReason = "scale_down" if count else "stopped"

    if desired.hold and count > 0 and old:
        # Failed without a rollback while the old version still serves: it stays, nothing
        # new starts. With nothing old to protect, the target is retried with crash backoff.
        return Plan(tuple(actions))

    canary_phase = (desired.strategy == "canary" and not desired.promoted and desired.canary > 0
                    and bool(old) and count > 0)
    wanted = min(desired.canary, count) if canary_phase else count

    # More of the target than wanted (a scale-down): the least useful go first.
    surplus = len(new) - wanted
    if surplus > 0:
        extra = _least_useful(new, healthy)[:surplus]
        actions.extend(Retire(r, down) for r in extra)
        new = [r for r in new if r not in extra]

    new_stable = sum(1 for r in new if stable(r))
    retire_old: list[Replica]
    if canary_phase:
        # Canaries run beside every old replica; nothing old goes until promotion.
        retire_old = []
        start_budget = wanted - len(new)
    elif desired.strategy == "recreate" or count == 0:
        # Recreate starts the new version only once the old one has fully stopped.
        old_stopping = any(
            r.deployment not in ours and r.id in observed.retiring and not r.gone
            for r in observed.replicas
        )
        retire_old = old
        start_budget = 0 if old or old_stopping else count - len(new)
    elif not any(healthy(r) for r in old):
        # Nothing healthy to protect: replace everything at once.
        retire_old = old if new_stable >= count else []
        start_budget = count - len(new)
    else:
        keep_old = max(0, count - desired.max_unavailable - new_stable)
        retire_old = _least_useful(old, healthy)[: max(0, len(old) - keep_old)]
        surge_room = count + desired.max_surge - (len(new) + len(old) - len(retire_old))
        start_budget = max(0, min(count - len(new), surge_room))

    actions.extend(Retire(r, "rollout" if count else "stopped") for r in retire_old)

    used = {r.slot for r in new}
    free = (slot for slot in range(10_000) if slot not in used)
    waiting: list[int] = []
    for _ in range(max(0, start_budget)):
        slot = next(free)
        if slot in observed.backoff_slots:
            waiting.append(slot)
        else:
            actions.append(Start(slot))

    starting = any(isinstance(a, Start | Resume) for a in actions) or bool(waiting)
    settling = [desired.min_healthy_s - observed.healthy_for.get(r.id, 0.0)
                for r in new if healthy(r) and not stable(r)]
    return Plan(
        tuple(actions),
        tuple(waiting),
        rollout_done=not canary_phase and len(new) == count and new_stable == count
        and not old and not starting,
        canaries_ready=canary_phase and len(new) == wanted and new_stable == wanted,
        recheck_in_s=max(0.0, min(settling)) if settling else None,
        switching=not canary_phase and any(healthy(r) for r in new) and bool(old),
    )


def _least_useful(
    replicas: Iterable[Replica], healthy: Callable[[Replica], bool]
) -> list[Replica]:
    """Unhealthy before healthy, then the highest slot first."""
    return sorted(replicas, key=lambda r: (healthy(r), -r.slot))
