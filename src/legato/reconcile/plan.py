"""The planner: desired state + what runs -> the actions that converge them. Pure: no IO.

Like Nomad's reconciler it only decides; `loop.py` carries the actions out. A rollout keeps
old replicas until new ones are healthy (`max_surge`/`max_unavailable`), so a deployment
that never gets healthy leaves the old version serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from legato.runtime.base import Replica

Health = Literal["starting", "healthy", "unhealthy"]
Strategy = Literal["rolling", "canary", "recreate"]


@dataclass(frozen=True)
class Start:
    slot: int


@dataclass(frozen=True)
class Retire:
    """Take a replica out of the route, let it finish its requests, stop and remove it."""

    replica: Replica
    reason: Literal["scale_down", "rollout", "unhealthy", "stopped"]


@dataclass(frozen=True)
class Clear:
    """Remove a replica that is no longer running (it exited or never started)."""

    replica: Replica


Action = Start | Retire | Clear


@dataclass(frozen=True)
class Desired:
    deployment: str
    replicas: int
    strategy: Strategy = "rolling"
    max_surge: int = 1
    max_unavailable: int = 0


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    waiting_slots: tuple[int, ...] = ()  # slots held back by crash backoff
    rollout_done: bool = False

    def of(self, kind: type[Action]) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]


@dataclass(frozen=True)
class Observed:
    replicas: tuple[Replica, ...]
    health: Mapping[str, Health] = field(default_factory=dict)
    retiring: frozenset[str] = frozenset()
    backoff_slots: frozenset[int] = frozenset()


def plan(desired: Desired, observed: Observed) -> Plan:
    """What to do now so that `desired` runs; safe to call again with the next observation."""
    actions: list[Action] = []
    live: list[Replica] = []
    for replica in observed.replicas:
        if replica.id in observed.retiring:
            continue
        if replica.gone or replica.state == "created":
            actions.append(Clear(replica))
        elif observed.health.get(replica.id) == "unhealthy":
            actions.append(Retire(replica, "unhealthy"))
        else:
            live.append(replica)

    def healthy(replica: Replica) -> bool:
        return observed.health.get(replica.id) == "healthy"

    new = [r for r in live if r.deployment == desired.deployment]
    old = [r for r in live if r.deployment != desired.deployment]
    count = desired.replicas
    reason: Literal["scale_down", "stopped"] = "scale_down" if count else "stopped"

    # Scale down the current deployment: the least useful replicas go first.
    surplus = len(new) - count
    if surplus > 0:
        extra = _least_useful(new, healthy)[:surplus]
        actions.extend(Retire(r, reason) for r in extra)
        new = [r for r in new if r not in extra]

    old_healthy = sum(1 for r in old if healthy(r))
    new_healthy = sum(1 for r in new if healthy(r))

    if desired.strategy == "recreate" or count == 0:
        # Recreate starts the new version only once the old one has fully stopped.
        old_stopping = any(
            r.deployment != desired.deployment and r.id in observed.retiring and not r.gone
            for r in observed.replicas
        )
        retire_old = old
        start_budget = 0 if old or old_stopping else count - len(new)
    elif old_healthy == 0:
        # Nothing healthy to protect: replace everything at once.
        retire_old = old if new_healthy >= count or count == 0 else []
        start_budget = count - len(new)
    else:
        keep_old = max(0, count - desired.max_unavailable - new_healthy)
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

    done = (
        len(new) == count
        and new_healthy == count
        and not old
        and not any(isinstance(a, Start) for a in actions)
        and not waiting
    )
    return Plan(tuple(actions), tuple(waiting), rollout_done=done)


def _least_useful(
    replicas: Iterable[Replica], healthy: Callable[[Replica], bool]
) -> list[Replica]:
    """Unhealthy before healthy, then the highest slot first."""
    return sorted(replicas, key=lambda r: (healthy(r), -r.slot))
