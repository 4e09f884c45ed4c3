"""The autoscaler: every `autoscale_interval_s`, each service's policy against its figures.

It acts only on a steady service (every replica healthy, no deployment in flight, awake and
not stopped): while replicas come and go the figures describe a count that is changing. Every
decision is an event with its reason and figures. It also puts idle services to sleep
(`sleep.idle_timeout_s`): no request for that long, and the replicas stop until the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from legato.errors import LegatoError
from legato.scaling.policy import Decision, Signals, decide
from legato.store import Service
from legato.ticker import Ticker

if TYPE_CHECKING:
    from legato.platform import Platform

log = logging.getLogger(__name__)
ACTOR = "autoscaler"


class Autoscaler:
    def __init__(self, platform: Platform, interval_s: float) -> None:
        self.platform = platform
        self.ticker = Ticker(interval_s)
        self.started_at = time.time()
        self.evaluations = 0
        self._at_max: set[str] = set()  # services told once that they are at max_replicas
        self._task: asyncio.Task[None] | None = None

    @property
    def interval_s(self) -> float:
        return self.ticker.interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self.ticker.interval_s = value

    def start(self) -> None:
        self.started_at = time.time()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self.ticker.wait()
            try:
                await self.evaluate_all()
            except Exception:
                log.exception("autoscaler round failed")

    async def evaluate_all(self) -> None:
        for service in await self.platform.store.list_services():
            try:
                await self.evaluate(service)
                await self.check_idle(service)
            except LegatoError as exc:  # deleted meanwhile, say
                log.debug("autoscaling %s: %s", service.name, exc.message)
        self.evaluations += 1

    def _steady(self, service: Service) -> bool:
        view = self.platform.view_now(service)
        return view is not None and view.status == "running" and view.healthy >= service.replicas

    async def evaluate(self, service: Service) -> Decision | None:
        """Apply the policy once; the decision taken (None: nothing to do)."""
        policy = service.scaling
        if (not service.autoscaled or service.stopped or service.sleeping
                or service.replicas <= 0 or not self._steady(service)):
            return None
        monitor = self.platform.monitor
        window = monitor.requests.window(service.name, policy.window_seconds)
        cpu, memory = monitor.averages(service.name, policy.window_seconds)
        signals = Signals(
            replicas=service.replicas, requests_known=monitor.requests_known,
            requests=window.requests, rps=window.rps, p95_ms=window.p95_ms,
            cpu_percent=cpu, memory_percent=memory,
        )
        changed = max((t.timestamp() for t in (service.last_scaled_at, service.woke_at) if t),
                      default=None)
        decision = decide(policy, signals,
                          since_last_change_s=None if changed is None else time.time() - changed)
        if decision is None or decision.action != "at_max":
            self._at_max.discard(service.name)
        if decision is None:
            return None
        if decision.action == "at_max":
            if service.name not in self._at_max:
                self._at_max.add(service.name)
                await self.platform.store.add_event(
                    service.name, "scaling", decision.reason,
                    {"action": "at_max", "trigger": decision.trigger,
                     "replicas": decision.previous, "figures": decision.figures})
            return decision
        await self.platform.scale(
            service.name, decision.target, actor=ACTOR, trigger=decision.trigger,
            reason=decision.reason, figures=decision.figures, expect=decision.previous)
        return decision

    async def check_idle(self, service: Service) -> bool:
        """Put the service to sleep if it had no request for `sleep.idle_timeout_s`."""
        timeout = service.sleep.idle_timeout_s
        if (timeout <= 0 or service.stopped or service.sleeping or service.replicas <= 0
                or (service.autoscaled and service.scaling.min_replicas > 0)
                or not self.platform.monitor.requests_known):
            return False
        view = self.platform.view_now(service)
        if view is None or view.spec is None or not view.spec.routed or view.status != "running":
            return False  # internal services get no requests through the edge; wait for steady
        monitor = self.platform.monitor
        last = max(filter(None, (
            monitor.requests.last_request_at(service.name), self.started_at,
            service.woke_at.timestamp() if service.woke_at else None,
            view.deployment.updated_at.timestamp() if view.deployment else None,
        )))
        idle = time.time() - last
        if idle < timeout:
            return False
        await self.platform.sleep(service.name, actor=ACTOR,
                                  reason=f"no request for {idle:.0f}s (idle_timeout_s={timeout:g})")
        return True
