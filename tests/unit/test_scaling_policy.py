"""The autoscaling policy: decide() against its module docstring, case by case and at random."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from legato.scaling.policy import Decision, Signals, decide, ratios
from legato.spec import Scaling

FIGURE_KEYS = {"replicas", "window_seconds", "requests", "rps", "rps_per_replica", "latency_p95_ms",
               "cpu_percent", "memory_percent"}
TRIGGERS = {"rps_high", "latency_high", "cpu_high", "memory_high", "low_load"}


def policy(**fields: Any) -> Scaling:
    """An auto policy between 1 and 10 replicas (defaults: out 80 %, in 30 %, midpoint 0.55)."""
    return Scaling(**{"mode": "auto", "min_replicas": 1, "max_replicas": 10, **fields})


def signals(replicas: int = 2, *, known: bool = True, requests: int = 1000, rps: float = 0.0,
            p95_ms: float | None = None, cpu: float | None = None,
            memory: float | None = None) -> Signals:
    return Signals(replicas=replicas, requests_known=known, requests=requests, rps=rps,
                   p95_ms=p95_ms, cpu_percent=cpu, memory_percent=memory)


RPS = {"target_rps_per_replica": 10}
LATENCY = {"max_p95_latency_ms": 200}
CPU = {"max_cpu_percent": 50}
MEMORY = {"max_memory_percent": 80}


# scale out -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "sig", "target", "trigger"),
    [
        # rps per replica 8.5 of 10 (0.85 > 0.8): ceil(2 * 0.85 / 0.55) = 4
        (RPS, signals(2, rps=17), 4, "rps_high"),
        # 1 replica at 0.81: ceil(1.47) = 2
        (RPS, signals(1, rps=8.1), 2, "rps_high"),
        # 10 of 20 at 0.81: ceil(14.73) = 15
        ({**RPS, "max_replicas": 20}, signals(10, rps=81), 15, "rps_high"),
        # a huge ratio is capped at max_replicas
        (RPS, signals(2, rps=100), 10, "rps_high"),
        # p95 170 of 200 (0.85): one more replica
        (LATENCY, signals(2, p95_ms=170), 3, "latency_high"),
        # however slow, latency moves one replica at a time
        (LATENCY, signals(4, p95_ms=5000), 5, "latency_high"),
        # CPU 45 of 50 (0.9): ceil(2 * 0.9 / 0.55) = 4
        (CPU, signals(2, cpu=45), 4, "cpu_high"),
        # CPU 100 of 50 (2.0) on 3: ceil(10.9) = 11, capped at 10
        (CPU, signals(3, cpu=100), 10, "cpu_high"),
        # memory 70 of 80 (0.875): ceil(3.18) = 4
        (MEMORY, signals(2, memory=70), 4, "memory_high"),
        # memory 66 of 80 (0.825) on 5: ceil(7.5) = 8
        (MEMORY, signals(5, memory=66), 8, "memory_high"),
        # the trigger is the highest ratio (latency 2.0), the step the highest proportional one
        # (rps 0.9 on 4: ceil(6.55) = 7)
        ({**RPS, **LATENCY}, signals(4, rps=36, p95_ms=400), 7, "latency_high"),
        # CPU 1.5 sizes the step over rps 0.9: ceil(2 * 1.5 / 0.55) = 6
        ({**RPS, **CPU}, signals(2, rps=18, cpu=75), 6, "cpu_high"),
        # a proportional signal that is not above does not size the step
        ({**CPU, **LATENCY}, signals(4, p95_ms=300, cpu=35), 5, "latency_high"),
        # other thresholds: out 90 %, in 50 %, midpoint 0.7; CPU 0.95 on 3: ceil(4.07) = 5
        ({**CPU, "scale_out_threshold_pct": 90, "scale_in_threshold_pct": 50},
         signals(3, cpu=47.5), 5, "cpu_high"),
        # one unknown signal does not stop another from scaling out
        ({**RPS, **CPU}, signals(2, known=False, rps=500, cpu=45), 4, "cpu_high"),
        ({**CPU, **MEMORY}, signals(2, cpu=None, memory=70), 4, "memory_high"),
    ],
)
def test_scale_out_when_any_ratio_is_above_the_out_threshold(
    fields: dict[str, float], sig: Signals, target: int, trigger: str
) -> None:
    """Any ratio above out% scales out: proportional for rps/CPU/memory, +1 for latency, capped."""
    decision = decide(policy(**fields), sig, since_last_change_s=None)
    assert decision is not None
    assert (decision.action, decision.previous, decision.target, decision.trigger) == (
        "scale_out", sig.replicas, target, trigger)


def test_proportional_step_is_ceil_of_current_times_ratio_over_the_midpoint() -> None:
    """The target equals ceil(current * ratio / ((out + in) / 2)) wherever that is below max."""
    for replicas in range(1, 8):
        for cpu in (41, 45, 50, 60, 75, 90, 100):
            decision = decide(policy(max_cpu_percent=50, max_replicas=100), signals(replicas, cpu=cpu),
                              since_last_change_s=None)
            assert decision is not None
            assert decision.target == max(replicas + 1, math.ceil(replicas * (cpu / 50) / 0.55))


@pytest.mark.parametrize(
    ("fields", "sig"),
    [
        (RPS, signals(2, rps=16)),  # exactly 80 %: not above
        (LATENCY, signals(2, p95_ms=160)),
        (CPU, signals(2, cpu=40)),
        (MEMORY, signals(2, memory=64)),
    ],
)
def test_a_ratio_equal_to_the_out_threshold_does_not_scale_out(fields: dict[str, float],
                                                               sig: Signals) -> None:
    """Above means strictly above; at 80 % nothing happens (it is not below 30 % either)."""
    assert decide(policy(**fields), sig, since_last_change_s=None) is None


@pytest.mark.parametrize(("fields", "sig"), [
    (RPS, signals(10, rps=200)), (LATENCY, signals(10, p95_ms=900)),
    (CPU, signals(10, cpu=99)), (MEMORY, signals(10, memory=79)),
])
def test_at_max_replicas_the_decision_is_at_max_with_the_same_target(fields: dict[str, float],
                                                                     sig: Signals) -> None:
    """Overloaded at max_replicas: action at_max, target == previous, the reason says so."""
    decision = decide(policy(**fields), sig, since_last_change_s=None)
    assert decision is not None
    assert (decision.action, decision.previous, decision.target) == ("at_max", 10, 10)
    assert decision.trigger in TRIGGERS - {"low_load"}
    assert "max_replicas (10)" in decision.reason


@pytest.mark.parametrize(("since", "acts"), [
    (None, True), (0.0, False), (59.9, False), (60.0, True), (61.0, True), (10_000.0, True),
])
def test_scale_out_waits_a_whole_window_after_the_last_change(since: float | None, acts: bool) -> None:
    """With window_seconds 60 a scale-out needs 60 s since the last change (None: never changed)."""
    decision = decide(policy(**CPU, window_seconds=60), signals(2, cpu=45), since_last_change_s=since)
    assert (decision is not None and decision.action == "scale_out") is acts


def test_scale_out_ignores_the_cooldown() -> None:
    """The cooldown holds back scale-in only: a window after a change is enough to grow."""
    decision = decide(policy(**CPU, window_seconds=30, cooldown_seconds=3600), signals(2, cpu=45),
                      since_last_change_s=31)
    assert decision is not None
    assert decision.action == "scale_out"


def test_at_max_also_waits_for_the_window() -> None:
    """Within the window after a change not even at_max is reported."""
    assert decide(policy(**CPU), signals(10, cpu=99), since_last_change_s=10) is None
    assert decide(policy(**CPU), signals(10, cpu=99), since_last_change_s=60) is not None


def test_an_overloaded_signal_within_the_window_does_not_fall_through_to_scale_in() -> None:
    """One signal above and waiting: no scale-in even though the other signals are low."""
    decision = decide(policy(**RPS, **CPU, cooldown_seconds=0), signals(4, rps=1, cpu=45),
                      since_last_change_s=5)
    assert decision is None


# scale in ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "sig", "target"),
    [
        # rps 0.1 on 4: ceil(0.73) = 1
        (RPS, signals(4, rps=4), 1),
        # rps 0.25 on 8: ceil(3.64) = 4
        (RPS, signals(8, rps=20), 4),
        # rps 0.29 on 4: ceil(2.11) = 3 = current - 1
        (RPS, signals(4, rps=11.6), 3),
        # rps 0.29 on 2: ceil(1.05) = 2, but at most current - 1
        (RPS, signals(2, rps=5.8), 1),
        # CPU 0.2 on 9: ceil(3.27) = 4
        (CPU, signals(9, cpu=10), 4),
        # memory 0.25 on 6: ceil(2.73) = 3
        (MEMORY, signals(6, memory=20), 3),
        # the highest proportional ratio sizes it: CPU 0.2, memory 0.25 on 6 -> 3
        ({**CPU, **MEMORY}, signals(6, cpu=10, memory=20), 3),
        # never below min_replicas
        ({**RPS, "min_replicas": 3}, signals(5, rps=0.5), 3),
        # min_replicas 0 still keeps one replica
        ({**RPS, "min_replicas": 0}, signals(3, rps=0), 1),
        # latency alone is not proportional: one replica at a time
        (LATENCY, signals(5, p95_ms=10), 4),
        # no request: the latency counts as 0, below
        (LATENCY, signals(5, requests=0, p95_ms=None), 4),
        # latency with a proportional signal: the proportional one sizes it
        ({**LATENCY, **CPU}, signals(8, p95_ms=10, cpu=5), 2),
        # other thresholds: in 50 %, out 90 %, midpoint 0.7; CPU 0.38 on 7: ceil(3.8) = 4
        ({**CPU, "scale_out_threshold_pct": 90, "scale_in_threshold_pct": 50},
         signals(7, cpu=19), 4),
    ],
)
def test_scale_in_when_every_signal_is_below_the_in_threshold(
    fields: dict[str, float], sig: Signals, target: int
) -> None:
    """All ratios below in% scale in proportionally, to at most current - 1, never below the floor."""
    decision = decide(policy(**fields), sig, since_last_change_s=None)
    assert decision is not None
    assert (decision.action, decision.previous, decision.target, decision.trigger) == (
        "scale_in", sig.replicas, target, "low_load")


@pytest.mark.parametrize(
    ("max_cpu", "sig", "action", "target"),
    [
        # CPU 84 of 80 (1.05) on 2: 2 * 1.05 / 0.7 = 3 exactly, and 3 replicas land at 0.7, midway
        (80, signals(2, cpu=84), "scale_out", 3),
        # CPU 7 of 50 (0.14) on 5: 5 * 0.14 / 0.7 = 1 exactly
        (50, signals(5, cpu=7), "scale_in", 1),
        # CPU 20 of 50 (0.4) on 7: 7 * 0.4 / 0.7 = 4 exactly
        (50, signals(7, cpu=20), "scale_in", 4),
    ],
)
def test_proportional_step_is_exact_when_the_ratio_lands_on_a_whole_count(
    max_cpu: float, sig: Signals, action: str, target: int
) -> None:
    """A count that puts the ratio exactly midway is enough: float error must not add a replica."""
    scaling = policy(max_cpu_percent=max_cpu, scale_out_threshold_pct=90, scale_in_threshold_pct=50)
    decision = decide(scaling, sig, since_last_change_s=None)
    assert decision is not None
    assert (decision.action, decision.target) == (action, target)


@pytest.mark.parametrize(
    ("fields", "sig"),
    [
        ({**RPS, **CPU}, signals(4, rps=1, cpu=25)),  # CPU 0.5: between in and out
        ({**RPS, **LATENCY}, signals(4, rps=1, p95_ms=100)),
        (RPS, signals(4, rps=12)),  # exactly 30 %: not below
        (CPU, signals(4, cpu=15)),
    ],
)
def test_no_scale_in_unless_every_signal_is_below(fields: dict[str, float], sig: Signals) -> None:
    """One signal at or above in% holds the count."""
    assert decide(policy(**fields), sig, since_last_change_s=None) is None


@pytest.mark.parametrize(("since", "acts"), [
    (None, True), (0.0, False), (179.0, False), (180.0, True), (3600.0, True),
])
def test_scale_in_waits_for_the_cooldown(since: float | None, acts: bool) -> None:
    """With cooldown_seconds 180 a scale-in needs 180 s since the last change."""
    decision = decide(policy(**RPS, cooldown_seconds=180), signals(4, rps=1), since_last_change_s=since)
    assert (decision is not None and decision.action == "scale_in") is acts


def test_scale_in_with_zero_cooldown_acts_right_after_a_change() -> None:
    """cooldown_seconds 0: no wait."""
    decision = decide(policy(**RPS, cooldown_seconds=0), signals(4, rps=1), since_last_change_s=0)
    assert decision is not None
    assert decision.action == "scale_in"


@pytest.mark.parametrize(("min_replicas", "replicas"), [(3, 3), (1, 1), (0, 1), (5, 4)])
def test_no_scale_in_at_or_below_the_floor(min_replicas: int, replicas: int) -> None:
    """At max(1, min_replicas) (or under it) there is nothing to take away."""
    decision = decide(policy(**RPS, min_replicas=min_replicas), signals(replicas, rps=0),
                      since_last_change_s=None)
    assert decision is None


# unknown signals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "sig"),
    [
        ({**RPS, **CPU}, signals(4, rps=1, cpu=None)),  # no CPU samples yet
        ({**RPS, **MEMORY}, signals(4, rps=1, memory=None)),
        ({**RPS, **CPU}, signals(4, known=False, rps=0, cpu=1)),  # no request log
        ({**LATENCY, **CPU}, signals(4, known=False, p95_ms=None, cpu=1)),
        (CPU, signals(4, cpu=None)),
        (RPS, signals(4, known=False, rps=0)),
    ],
)
def test_an_unknown_signal_blocks_scale_in(fields: dict[str, float], sig: Signals) -> None:
    """Missing figures can stop a scale-in even when everything known is low."""
    assert decide(policy(**fields), sig, since_last_change_s=None) is None


@pytest.mark.parametrize(
    ("fields", "sig"),
    [
        (RPS, signals(2, known=False, rps=10_000)),  # a rate nobody measured
        (LATENCY, signals(2, known=False, p95_ms=10_000)),
        (CPU, signals(2, cpu=None)),
        (MEMORY, signals(2, memory=None)),
        ({**RPS, **LATENCY, **CPU, **MEMORY}, signals(2, known=False, rps=999, p95_ms=999)),
    ],
)
def test_an_unknown_signal_never_causes_scale_out(fields: dict[str, float], sig: Signals) -> None:
    """Without figures nothing is above its target."""
    assert decide(policy(**fields), sig, since_last_change_s=None) is None


def test_no_request_counts_as_zero_latency() -> None:
    """p95 None with the log read: latency ratio 0, so it never scales out and allows scale-in."""
    assert ratios(policy(**LATENCY), signals(3, requests=0, p95_ms=None)) == {"latency": 0.0}
    assert ratios(policy(**LATENCY), signals(3, known=False)) == {"latency": None}


# nothing to decide ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scaling", "sig"),
    [
        (Scaling(mode="manual", target_rps_per_replica=10, max_cpu_percent=50), signals(2, rps=100)),
        (Scaling(mode="manual", target_rps_per_replica=10), signals(4, rps=0)),
        (policy(**RPS), signals(0, rps=100)),
        (policy(**RPS, min_replicas=0), signals(0, rps=100)),
        (policy(**RPS), signals(-1, rps=100)),
        (policy(), signals(2, rps=100, p95_ms=9000, cpu=100, memory=100)),  # no targets
        (policy(), signals(8, rps=0, cpu=0, memory=0)),
    ],
)
def test_manual_mode_zero_replicas_or_no_targets_decide_nothing(scaling: Scaling, sig: Signals) -> None:
    """decide() returns None when there is nothing to autoscale."""
    assert decide(scaling, sig, since_last_change_s=None) is None


# reasons and figures -------------------------------------------------------------------------


def test_scale_out_reason_and_figures() -> None:
    """The reason names the signal, its value, the threshold and the target; figures are rounded."""
    decision = decide(policy(**RPS, **CPU, window_seconds=90), signals(2, requests=1530, rps=17.0,
                      p95_ms=123.456, cpu=12.3456, memory=40.0), since_last_change_s=None)
    assert decision is not None
    assert decision.trigger == "rps_high"
    assert decision.reason == "requests per replica 8.5 is above 80% of its target 10"
    assert decision.figures == {
        "replicas": 2, "window_seconds": 90, "requests": 1530, "rps": 17.0,
        "rps_per_replica": 8.5, "latency_p95_ms": 123.46, "cpu_percent": 12.35,
        "memory_percent": 40.0,
    }


@pytest.mark.parametrize(("fields", "sig", "label", "trigger"), [
    (LATENCY, signals(2, p95_ms=250), "p95 latency (ms) 250", "latency_high"),
    (CPU, signals(2, cpu=45), "CPU % 45", "cpu_high"),
    (MEMORY, signals(2, memory=70), "memory % 70", "memory_high"),
])
def test_scale_out_reason_names_each_trigger(fields: dict[str, float], sig: Signals, label: str,
                                             trigger: str) -> None:
    """Each signal has its label and trigger name."""
    decision = decide(policy(**fields), sig, since_last_change_s=None)
    assert decision is not None
    assert decision.trigger == trigger
    assert decision.reason.startswith(f"{label} is above 80% of its target ")


def test_scale_in_reason_lists_every_signal_and_figures_show_unknowns() -> None:
    """low_load lists each configured signal; without the request log its figures are None."""
    decision = decide(policy(**CPU, **MEMORY), signals(4, known=False, requests=77, rps=3.0,
                      cpu=5.0, memory=10.0), since_last_change_s=None)
    assert decision is not None
    assert decision.trigger == "low_load"
    assert decision.reason == "every signal is below 30% of its target (CPU % 5, memory % 10)"
    assert decision.figures == {
        "replicas": 4, "window_seconds": 60, "requests": None, "rps": None,
        "rps_per_replica": None, "latency_p95_ms": None, "cpu_percent": 5.0, "memory_percent": 10.0,
    }


def test_at_max_reason_says_unknown_for_a_missing_value() -> None:
    """A figure that is None shows as 'unknown' where it appears; at_max keeps the figures."""
    decision = decide(policy(**CPU, **MEMORY), signals(10, cpu=None, memory=79),
                      since_last_change_s=None)
    assert decision is not None
    assert decision.action == "at_max"
    assert decision.trigger == "memory_high"
    assert decision.reason == ("memory % 79 is above 80% of its target 80, "
                               "but the service runs max_replicas (10)")
    assert set(decision.figures) == FIGURE_KEYS
    assert decision.figures["cpu_percent"] is None


# property ------------------------------------------------------------------------------------


def random_case(rng: random.Random) -> tuple[Scaling, Signals, float | None]:
    """A random valid policy, signals of a count within its bounds, and a time since change."""
    min_replicas = rng.choice([0, 0, 1, 1, 2, 3, rng.randint(0, 20)])
    max_replicas = rng.randint(max(1, min_replicas), max(1, min_replicas) + rng.choice([0, 1, 3, 10, 40]))
    targets: dict[str, float] = {}
    if rng.random() < 0.6:
        targets["target_rps_per_replica"] = rng.choice([0.5, 1, 10, 33.3, rng.uniform(0.1, 500)])
    if rng.random() < 0.5:
        targets["max_p95_latency_ms"] = rng.choice([50, 200, rng.uniform(1, 5000)])
    if rng.random() < 0.5:
        targets["max_cpu_percent"] = rng.choice([50, 80, 100, rng.uniform(1, 100)])
    if rng.random() < 0.4:
        targets["max_memory_percent"] = rng.choice([70, 90, rng.uniform(1, 100)])
    scaling = Scaling(
        mode=rng.choice(["auto"] * 9 + ["manual"]), min_replicas=min_replicas, max_replicas=max_replicas,
        scale_out_threshold_pct=rng.choice([80, 90, 100, rng.uniform(1, 100)]),
        scale_in_threshold_pct=rng.choice([30, 50, rng.uniform(1, 100)]),
        window_seconds=rng.choice([5, 60, 300]), cooldown_seconds=rng.choice([0, 180, 600]),
        **targets,
    )
    replicas = rng.randint(max(1, min_replicas), max_replicas) if rng.random() < 0.95 else 0
    known = rng.random() < 0.8
    requests = rng.choice([0, rng.randint(1, 100_000)])
    scale = rng.choice([0.01, 0.3, 1, 3, 30])
    sig = Signals(
        replicas=replicas, requests_known=known, requests=requests,
        rps=0.0 if requests == 0 else rng.uniform(0, 200) * scale,
        p95_ms=None if requests == 0 or rng.random() < 0.05 else rng.uniform(0, 1000) * scale,
        cpu_percent=None if rng.random() < 0.15 else rng.uniform(0, 100) * min(scale, 1),
        memory_percent=None if rng.random() < 0.15 else rng.uniform(0, 100) * min(scale, 1),
    )
    since = rng.choice([None, 0.0, rng.uniform(0, 1000)])
    return scaling, sig, since


def check_invariants(scaling: Scaling, sig: Signals, since: float | None,
                     decision: Decision | None) -> None:
    found = ratios(scaling, sig)
    out, into = scaling.scale_out_threshold_pct / 100, scaling.scale_in_threshold_pct / 100
    if scaling.mode != "auto" or sig.replicas <= 0 or not found:
        assert decision is None
        return
    if decision is None:
        return
    floor = max(1, scaling.min_replicas)
    elapsed = math.inf if since is None else since
    assert decision.previous == sig.replicas
    assert floor <= decision.target <= scaling.max_replicas
    assert decision.trigger in TRIGGERS
    assert set(decision.figures) == FIGURE_KEYS
    assert decision.reason
    if decision.action == "scale_out":
        assert decision.target > decision.previous
        assert any(v is not None and v > out for v in found.values())
        assert elapsed >= scaling.window_seconds
        assert decision.trigger != "low_load"
    elif decision.action == "scale_in":
        assert decision.target < decision.previous
        assert all(v is not None and v < into for v in found.values())
        assert elapsed >= scaling.cooldown_seconds
        assert decision.trigger == "low_load"
    else:
        assert decision.action == "at_max"
        assert decision.target == decision.previous == scaling.max_replicas
        assert elapsed >= scaling.window_seconds


def test_random_policies_keep_bounds_and_move_in_the_right_direction() -> None:
    """Over many seeded random cases every decision stays within min/max and the floor of 1,
    scale-outs grow, scale-ins shrink, and each is backed by its signals and waits."""
    rng = random.Random(20240501)
    actions: dict[str | None, int] = {}
    for _ in range(5000):
        scaling, sig, since = random_case(rng)
        decision = decide(scaling, sig, since_last_change_s=since)
        check_invariants(scaling, sig, since, decision)
        key = None if decision is None else decision.action
        actions[key] = actions.get(key, 0) + 1
    # the generator reaches every outcome often enough to mean something
    assert all(actions.get(k, 0) >= 100 for k in (None, "scale_out", "scale_in", "at_max")), actions
