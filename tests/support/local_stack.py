"""Test support for the local Lambda: moto with the template's resources, containers, the whole API.

Everything here is the code ``make run`` and ``make invoke`` use (the ``local`` package), started
on free ports and stopped at the end of the ``with`` block:

- ``moto_resources()``: a moto server with the template's bucket, tables and queues
  (an ``AwsStack`` from ``support.moto_stack``, with ``env()`` for functions);
- ``lambda_containers(function, n, env=...)``: ``n`` warm containers of a function (a template
  logical id from the built artifacts, or a ``LambdaFunction`` of a tiny handler written by the
  test) and ``invoke(event, index)`` returning the ``InvocationResult``;
- ``local_api(...)``: the whole local deployment (``local.stack.LocalStack``) behind its URL;
- ``built_artifacts()``: the ``sam build`` output, building it once (under a lock, so parallel
  workers do not build over each other) when sources changed.

Missing pieces (no build output, moto not starting) skip the test, or fail it when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from local.container import InvocationResult, LambdaContainer
from local.services import MotoServer, ServiceError, create_resources
from local.stack import LocalStack, StackOptions, template_for
from local.template import LambdaFunction, SamTemplate
from support.moto_stack import AwsStack

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def unavailable(reason: str) -> None:
    """Skip outside CI, fail in CI (where every service must be there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# --- (a) moto with the template's resources ---------------------------------------------------


@contextlib.contextmanager
def moto_resources(template_path: Path | None = None) -> Iterator[AwsStack]:
    """A moto server holding the template's bucket, tables and queues."""
    server = MotoServer()
    try:
        server.start()
    except (ServiceError, OSError) as exc:
        unavailable(f"moto server unavailable: {exc}")
    try:
        template = SamTemplate(template_path or PROJECT_ROOT / "template.yaml", region=REGION, endpoint_url=server.url)
        resources = template.local_resources()
        create_resources(resources, server.url, REGION)
        names = {r.logical_id: r.name for r in resources}
        queue_urls = {r.logical_id: template.queue_url(r.name) for r in resources if r.type == "AWS::SQS::Queue"}
        yield AwsStack(server.url, names, queue_urls)
    finally:
        server.stop()


# --- the build output -------------------------------------------------------------------------


def built_artifacts() -> Path:
    """The ``sam build`` output (``LOCAL_BUILD_DIR`` or .aws-sam/build), built when stale.

    Stale means a source ``make build`` watches is newer than the build; then ``make build`` runs,
    under a lock so that parallel test workers do not build into one directory at once.
    """
    given = os.environ.get("LOCAL_BUILD_DIR")
    if given:
        return Path(given)
    build_dir = PROJECT_ROOT / ".aws-sam" / "build"
    lock_path = PROJECT_ROOT / ".aws-sam" / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _build_is_stale(build_dir):
                done = subprocess.run(["make", "-s", "build"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    unavailable(f"sam build failed: {done.stderr.strip()[-800:]}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return build_dir


def _build_is_stale(build_dir: Path) -> bool:
    stamp = build_dir / "template.yaml"
    if not stamp.is_file():
        return True
    built = stamp.stat().st_mtime
    sources = [
        PROJECT_ROOT / "template.yaml",
        PROJECT_ROOT / "layers" / "shared" / "Makefile",
        *(PROJECT_ROOT / "layers" / "shared" / "extensions").glob("*"),
    ]
    for root in ("layers", "functions"):
        sources += [
            p
            for p in (PROJECT_ROOT / root).rglob("*")
            if (p.suffix == ".py" or p.name == "requirements.txt") and "__pycache__" not in p.parts
        ]
    return any(p.stat().st_mtime > built for p in sources)


def require_function_build(build_dir: Path, logical_id: str) -> None:
    if not (build_dir / logical_id).is_dir():
        unavailable(f"{logical_id} has no build output in {build_dir}")


# --- (b) containers ---------------------------------------------------------------------------


def handler_function(
    tmp_dir: Path,
    source: str,
    *,
    name: str = "probe",
    timeout: float = 3.0,
    environment: Mapping[str, str] | None = None,
    memory_mb: int = 128,
) -> LambdaFunction:
    """A function whose code is ``source`` (a module ``app`` with ``handler``), in ``tmp_dir``."""
    code_dir = tmp_dir / name
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "app.py").write_text(textwrap.dedent(source))
    return LambdaFunction(
        name=name, handler="app.handler", code_dir=code_dir, timeout=timeout, memory_mb=memory_mb, environment=dict(environment or {})
    )


class Containers:
    """``n`` containers of one function; ``invoke`` runs an event on one of them."""

    def __init__(self, containers: list[LambdaContainer]) -> None:
        self.containers = containers

    def invoke(self, event: Any, index: int = 0, **kwargs: Any) -> InvocationResult:
        return self.containers[index].invoke(event, **kwargs)

    def __len__(self) -> int:
        return len(self.containers)


@contextlib.contextmanager
def lambda_containers(
    function: str | LambdaFunction,
    n: int = 1,
    *,
    env: Mapping[str, str] | None = None,
    build_dir: Path | None = None,
    log_dir: Path | None = None,
    runtime_packages: str = "lambda",
) -> Iterator[Containers]:
    """Start ``n`` containers of ``function`` with ``env`` over its template environment.

    ``function`` is a template logical id (run from ``build_dir``, default the built artifacts)
    or a ``LambdaFunction`` (see ``handler_function``).
    """
    if isinstance(function, str):
        build_dir = build_dir or built_artifacts()
        require_function_build(build_dir, function)
        function = SamTemplate(template_for(build_dir), region=REGION).function(function, build_dir)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="local-lambda-logs-"))
    containers = [LambdaContainer(function, env, region=REGION, log_dir=log_dir, runtime_packages=runtime_packages) for _ in range(n)]
    try:
        for container in containers:
            container.start()
        yield Containers(containers)
    finally:
        for container in containers:
            container.stop()


# --- (c) the whole local API ------------------------------------------------------------------


@contextlib.contextmanager
def local_api(
    *,
    build_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    env_vars_file: Path | None = None,
    max_containers: int = 8,
    metrics: bool = False,
    event_sources: bool = False,
    require_api_key: str | None = None,
    operator_api_key: str | None = None,
    run_dir: Path | None = None,
) -> Iterator[LocalStack]:
    """The whole local deployment (``make run``'s code) on a free port; ``stack.url`` is its API.

    ``env`` plays the variables given to ``make run`` (``AWS_ENDPOINT_URL``, ``PUSHGATEWAY_URL``,
    ``SENTRY_DSN``, ``BACKEND_API_URL``...). The metrics stack and the event sources are off unless
    asked for, and nothing is written to the project's ``.run/``.
    """
    build_dir = build_dir or built_artifacts()
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="local-run-"))
    options = StackOptions(
        build_dir=build_dir,
        run_dir=run_dir,
        port=0,
        max_containers=max_containers,
        require_api_key=require_api_key,
        operator_api_key=operator_api_key,
        metrics=metrics,
        pushgateway_port=0,
        prometheus_port=0,
        event_sources=event_sources,
        region=REGION,
        env_vars_file=env_vars_file,
        host_env=dict(env or {}),
        state_file=None,
    )
    stack = LocalStack(options)
    try:
        stack.start()
    except (ServiceError, OSError) as exc:
        stack.close()
        unavailable(f"local stack did not start: {exc}")
    try:
        yield stack
    finally:
        stack.close()
