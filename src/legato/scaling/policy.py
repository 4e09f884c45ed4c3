"""The autoscaling policy (SPEC §6, seed 004): figures over a window in, a decision out. Pure.

Each configured signal is compared with its target as a ratio (value / target):

- scale out when any ratio is above `scale_out_threshold_pct`; scale in only when every one is
  below `scale_in_threshold_pct`.
- Signals that share load between replicas (requests per replica, CPU, memory) size the step
  like Kubernetes' HPA: enough replicas for the highest ratio to land midway between the two
  thresholds. Latency does not divide by replicas, so it moves one replica at a time.
- A scale-out waits until a whole window has passed since the last change of replicas (the
  figures must describe the current count); a scale-in waits for `cooldown_seconds`.
- `min_replicas` and `max_replicas` always hold, and an awake service keeps at least one
  replica: going to zero is the sleep's business (`sleep.idle_timeout_s`).
- A signal without figures (no CPU samples yet, no request log) counts neither way, so
  missing metrics can stop a scale-in but never cause one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from legato.spec import Scaling

Action = Literal["scale_out", "scale_in", "at_max"]
_PROPORTIONAL = ("rps", "cpu", "memory")
_TRIGGER = {"rps": "rps_high", "latency": "latency_high", "cpu": "cpu_high", "memory": "memory_high"}
_LABEL = {"rps": "requests per replica", "latency": "p95 latency (ms)", "cpu": "CPU %",
          "memory": "memory %"}


@dataclass(frozen=True)
class Signals:
    """What a service did over the policy's window."""

    replicas: int  # the current count (all of them healthy: the autoscaler waits for that)
    requests_known: bool  # the edge's request log is read (else rps and latency are unknown)
    requests: int
    rps: float
    p95_ms: float | None  # None without requests
    cpu_percent: float | None  # per replica, averaged over the window (None: no samples)
    memory_percent: float | None


@dataclass(frozen=True)
class Decision:
    action: Action
    previous: int
    target: int
    trigger: str  # rps_high, latency_high, cpu_high, memory_high or low_load
    reason: str
    figures: dict[str, float | int | None]


def ratios(policy: Scaling, signals: Signals) -> dict[str, float | None]:
    """value / target of each signal the policy sets a target for (None: no figures)."""
    found: dict[str, float | None] = {}
    if policy.target_rps_per_replica is not None:
        found["rps"] = (signals.rps / max(1, signals.replicas) / policy.target_rps_per_replica
                        if signals.requests_known else None)
    if policy.max_p95_latency_ms is not None:
        if not signals.requests_known:
            found["latency"] = None
        elif signals.p95_ms is None:  # no requests: nothing is slow
            found["latency"] = 0.0
        else:
            found["latency"] = signals.p95_ms / policy.max_p95_latency_ms
    if policy.max_cpu_percent is not None:
        found["cpu"] = (None if signals.cpu_percent is None
                        else signals.cpu_percent / policy.max_cpu_percent)
    if policy.max_memory_percent is not None:
        found["memory"] = (None if signals.memory_percent is None
                           else signals.memory_percent / policy.max_memory_percent)
    return found


def figures(policy: Scaling, signals: Signals) -> dict[str, float | int | None]:
    per_replica = signals.rps / max(1, signals.replicas) if signals.requests_known else None
    return {
        "replicas": signals.replicas,
        "window_seconds": policy.window_seconds,
        "requests": signals.requests if signals.requests_known else None,
        "rps": _round(signals.rps) if signals.requests_known else None,
        "rps_per_replica": _round(per_replica),
        "latency_p95_ms": _round(signals.p95_ms),
        "cpu_percent": _round(signals.cpu_percent),
        "memory_percent": _round(signals.memory_percent),
    }


def decide(policy: Scaling, signals: Signals, *, since_last_change_s: float | None) -> Decision | None:
    """What to do about a steady, awake service; None for nothing (or not yet)."""
    current = signals.replicas
    if policy.mode != "auto" or current <= 0:
        return None
    found = ratios(policy, signals)
    if not found:
        return None
    out, into = policy.scale_out_threshold_pct / 100, policy.scale_in_threshold_pct / 100
    aim = (out + into) / 2  # where a resized service's highest ratio should land
    floor = max(1, policy.min_replicas)
    facts = figures(policy, signals)
    elapsed = math.inf if since_last_change_s is None else since_last_change_s

    above = {k: v for k, v in found.items() if v is not None and v > out}
    if above:
        if elapsed < policy.window_seconds:
            return None  # the window still holds figures from before the last change
        name = max(above, key=lambda k: above[k])
        reason = (f"{_LABEL[name]} {_show(_value(name, facts))} is above "
                  f"{policy.scale_out_threshold_pct:g}% of its target "
                  f"{_show(_target(policy, name))}")
        if current >= policy.max_replicas:
            return Decision("at_max", current, current, _TRIGGER[name],
                            f"{reason}, but the service runs max_replicas "
                            f"({policy.max_replicas})", facts)
        wanted = current + 1
        for key in _PROPORTIONAL:
            ratio = above.get(key)
            if ratio is not None:
                wanted = max(wanted, _ceil(current * ratio / aim))
        target = max(floor, min(policy.max_replicas, wanted))
        return Decision("scale_out", current, target, _TRIGGER[name], reason, facts)

    if any(v is None for v in found.values()) or not all(v < into for v in found.values() if v is not None):
        return None
    if elapsed < policy.cooldown_seconds or current <= floor:
        return None
    proportional = [v for k, v in found.items() if k in _PROPORTIONAL and v is not None]
    needed = _ceil(current * max(proportional) / aim) if proportional else current - 1
    target = max(floor, min(current - 1, policy.max_replicas, needed))
    reason = ("every signal is below "
              f"{policy.scale_in_threshold_pct:g}% of its target ("
              + ", ".join(f"{_LABEL[k]} {_show(_value(k, facts))}" for k in found) + ")")
    return Decision("scale_in", current, target, "low_load", reason, facts)


def _ceil(value: float) -> int:
    """Whole replicas for a fractional need; a need of 4.000000000000001 is 4."""
    return math.ceil(value - 1e-9)


def _value(name: str, facts: dict[str, float | int | None]) -> float | int | None:
    return facts[{"rps": "rps_per_replica", "latency": "latency_p95_ms", "cpu": "cpu_percent",
                  "memory": "memory_percent"}[name]]


def _target(policy: Scaling, name: str) -> float | None:
    return {"rps": policy.target_rps_per_replica, "latency": policy.max_p95_latency_ms,
            "cpu": policy.max_cpu_percent, "memory": policy.max_memory_percent}[name]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _show(value: float | int | None) -> str:
    return "unknown" if value is None else f"{value:g}"
