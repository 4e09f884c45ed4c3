"""`GET /metrics`: Legato's figures in the Prometheus text exposition format (version 0.0.4).

Per service: replicas desired/current/healthy, requests by status class, a latency histogram,
restarts; deployments by status; and the control plane's own figures (its process, reconcile
passes, the access log, the event loop's lag).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from legato.monitor.requests import HISTOGRAM_BOUNDS_MS, Totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = Mapping[str, str]


@dataclass
class Family:
    """One metric family: its samples share a name, a type and a help text."""

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)  # suffix, labels, value

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> Family:
        self.samples.append((suffix, labels or {}, value))
        return self


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def render(families: Iterable[Family]) -> str:
    lines = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {family.name} {help_text}", f"# TYPE {family.name} {family.kind}"]
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{text}}} {_number(value)}" if text
                         else f"{family.name}{suffix} {_number(value)}")
    return "\n".join(lines) + "\n"


def request_families(totals: Mapping[str, Totals], projects: Mapping[str, str]) -> list[Family]:
    """Requests by status class and the latency histogram of every service the edge served."""
    requests = Family("legato_service_requests_total", "counter",
                      "Requests the edge answered for the service, by status class.")
    latency = Family("legato_service_request_duration_seconds", "histogram",
                     "Time to answer a request at the edge (HAProxy %Ta).")
    for service in sorted(totals):
        figures = totals[service]
        base = {"service": service, "project": projects.get(service, "")}
        for klass, count in sorted(figures.by_class.items()):
            requests.add(count, {**base, "code": klass})
        bounds = [*(f"{b / 1000:g}" for b in HISTOGRAM_BOUNDS_MS), "+Inf"]
        for bound, count in zip(bounds, figures.histogram, strict=True):
            latency.add(count, {**base, "le": bound}, "_bucket")
        latency.add(figures.latency_sum_ms / 1000, base, "_sum")
        latency.add(figures.histogram[-1], base, "_count")
    return [requests, latency]
