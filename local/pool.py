"""Warm containers of one function, scaled the way Lambda scales them.

An invocation takes an idle warm container when there is one (the most recently used, so the
rest can go cold); when every container is busy it starts a new one -- a cold start, as Lambda
does -- until ``max_containers`` exist. Past that an invocation waits for a container to become
free (Lambda would throttle; locally waiting is more useful) and gives up with ``Throttled``
after ``max_wait`` seconds. Containers that died (a timeout, a crash) are dropped and replaced
on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import IO, Any, Callable, Mapping

from local.container import ContainerError, InvocationResult, LambdaContainer
from local.template import LambdaFunction

log = logging.getLogger("local.pool")

DEFAULT_MAX_CONTAINERS = 8


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
        self._factory = container_factory or LambdaContainer
        self._idle: list[LambdaContainer] = []
        self._all: list[LambdaContainer] = []
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self.started_containers = 0
        self.served_by: dict[str, int] = {}

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
                    raise Throttled(f"{self.function.key}: all {self.max_containers} containers busy "
                                    f"for {self.max_wait:.1f} s")
                self._cond.wait(remaining)
        # Start outside the lock: spawning a process must not hold up the other invocations.
        try:
            container = self._factory(self.function, self.overrides, **self._options).start()
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
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
            self._cond.notify()
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

    def close(self) -> None:
        """Stop every container (busy ones too: their invocations end as ``exit`` errors)."""
        with self._cond:
            self._closed = True
            containers, self._all, self._idle = list(self._all), [], []
            self._cond.notify_all()
        for container in containers:
            container.stop()
