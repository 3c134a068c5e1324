"""Warm containers of one function, scaled the way Lambda scales them.

An idle warm container when there is one (the most recently used), else a new one (a cold
start) up to ``max_containers``; past that an invocation waits, giving up with ``Throttled``
after ``max_wait`` seconds. A container idle ``idle_seconds`` is taken out under the pool's lock
and retired; ``close()`` retires all after a ``drain``. Why: docs/local-lambda.md ("Lifecycle").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from local.container import ContainerError, InvocationResult, LambdaContainer
from local.template import LambdaFunction

log = logging.getLogger("local.pool")

DEFAULT_MAX_CONTAINERS = 8

# `make run`'s idle time before a container is retired (LOCAL_IDLE_SECONDS): longer than the
# synthetic check's one-minute period, so the container it keeps warm survives between checks,
# and short enough to see retirement happen. (Lambda's own is unspecified, often minutes.)
DEFAULT_IDLE_SECONDS = 120.0

# How long close() lets running invocations finish before their containers are retired anyway.
DEFAULT_DRAIN_SECONDS = 5.0


class Throttled(RuntimeError):
    """Every container was busy for longer than the pool's ``max_wait``."""


class FunctionPool:
    """The containers of one function.

    Args:
        function: what every container runs.
        overrides: environment on top of the function's (see ``local.container.lambda_environment``).
        max_containers: the function's concurrency limit.
        max_wait: how long an invocation may wait for a free container at the limit
            (default: the function's timeout).
        container_factory: builds a container (tests pass their own); receives the function and
            the overrides, plus ``container_options``.
        idle_seconds: retire a container idle this long (None or 0: never; see the module doc).
        shutdown_budget_ms: each container's shutdown budget (default: ``LOCAL_SHUTDOWN_BUDGET_MS``
            or 500).
    """

    def __init__(
        self,
        function: LambdaFunction,
        overrides: Mapping[str, str] | None = None,
        *,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        max_wait: float | None = None,
        log_dir: Any = None,
        echo: IO[str] | None = None,
        runtime_packages: str = "lambda",
        region: str | None = None,
        container_factory: Callable[..., LambdaContainer] | None = None,
        idle_seconds: float | None = None,
        shutdown_budget_ms: float | None = None,
    ) -> None:
        if max_containers < 1:
            raise ValueError("max_containers must be at least 1")
        self.function = function
        self.overrides = dict(overrides or {})
        self.max_containers = max_containers
        self.max_wait = function.timeout if max_wait is None else max_wait
        self._options: dict[str, Any] = {"log_dir": log_dir, "echo": echo, "runtime_packages": runtime_packages}
        if region:
            self._options["region"] = region
        if shutdown_budget_ms is not None:
            self._options["shutdown_budget_ms"] = shutdown_budget_ms
        self.idle_seconds = idle_seconds or None
        self._factory = container_factory or LambdaContainer
        self._idle: list[LambdaContainer] = []
        self._all: list[LambdaContainer] = []
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self.started_containers = 0
        self.retired_containers = 0
        self.served_by: dict[str, int] = {}
        self._retirements: list[threading.Thread] = []
        self._reaper: threading.Thread | None = None
        if self.idle_seconds:
            self._reaper = threading.Thread(target=self._reap, daemon=True, name=f"reaper-{function.key}")
            self._reaper.start()

    @property
    def size(self) -> int:
        with self._cond:
            return len(self._all)

    def containers(self) -> list[LambdaContainer]:
        with self._cond:
            return list(self._all)

    def _acquire(self) -> LambdaContainer:
        deadline = time.monotonic() + self.max_wait
        with self._cond:
            while True:
                if self._closed:
                    raise ContainerError(f"{self.function.key}: pool is closed")
                while self._idle:
                    container = self._idle.pop()
                    if container.alive:
                        return container
                    self._forget(container)
                if len(self._all) + self._starting < self.max_containers:
                    self._starting += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Throttled(f"{self.function.key}: all {self.max_containers} containers busy for {self.max_wait:.1f} s")
                self._cond.wait(remaining)
        # Start outside the lock: spawning a process must not hold up the other invocations.
        try:
            container = self._factory(self.function, self.overrides, **self._options).start()
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting -= 1
            self._all.append(container)
            self.started_containers += 1
        log.info("%s: started container %s (%d running)", self.function.key, container.id, len(self._all))
        return container

    def _release(self, container: LambdaContainer) -> None:
        with self._cond:
            if container.alive and not self._closed:
                self._idle.append(container)
            else:
                self._forget(container)
            self._cond.notify_all()
        if not container.alive:
            container.stop()

    def _forget(self, container: LambdaContainer) -> None:
        if container in self._all:
            self._all.remove(container)

    def invoke(self, event: Any, **kwargs: Any) -> InvocationResult:
        """Invoke on an idle container, or a new one (see the module doc).

        Raises:
            Throttled: the pool stayed at ``max_containers`` busy containers for ``max_wait``.
            ContainerError: the pool is closed or a container could not start.
        """
        container = self._acquire()
        try:
            result = container.invoke(event, **kwargs)
        finally:
            self._release(container)
        with self._cond:
            self.served_by[container.id] = self.served_by.get(container.id, 0) + 1
        return result

    # --- retirement ----------------------------------------------------------------------------

    def _reap(self) -> None:
        """The reaper thread: retire the containers idle for ``idle_seconds``."""
        assert self.idle_seconds
        interval = max(0.02, min(1.0, self.idle_seconds / 4))
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for container in [c for c in self._idle if now - c.idle_since >= self.idle_seconds]:
                    self._idle.remove(container)
                    self._forget(container)
                    self._retire_later(container, f"idle for {now - container.idle_since:.1f} s")
                self._cond.wait(interval)

    def _retire_later(self, container: LambdaContainer, why: str, drain: float = 0.0) -> None:
        """Retire ``container``, already out of the pool, in a thread of its own (under the lock)."""

        def retire() -> None:
            try:
                container.retire(drain=drain)
                container.stop()
            finally:
                with self._cond:
                    self.retired_containers += 1
                    left = len(self._all)
                    self._cond.notify_all()
            report = container.shutdown_report
            took = f", shut down in {report.duration_ms:.0f} ms" if report else ""
            log.info("%s: retired container %s (%s%s; %d left)", self.function.key, container.id, why, took, left)

        thread = threading.Thread(target=retire, daemon=True, name=f"retire-{self.function.key}-{container.id}")
        self._retirements = [t for t in self._retirements if t.is_alive()] + [thread]
        thread.start()

    def close(self, drain: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Retire every container at once; running invocations get up to ``drain`` seconds first."""
        with self._cond:
            self._closed = True
            idle = {id(c) for c in self._idle}
            containers, self._all, self._idle = list(self._all), [], []
            for container in containers:
                self._retire_later(container, "pool closed", 0.0 if id(container) in idle else drain)
            self._cond.notify_all()
            threads = list(self._retirements)
        for thread in threads:
            thread.join()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
