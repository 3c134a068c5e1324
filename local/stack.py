"""The whole local deployment, as ``make run`` starts it and end-to-end tests reuse it.

``LocalStack.start()`` brings up the AWS endpoint (a given ``AWS_ENDPOINT_URL``, else moto with
the template's resources), the metrics stack (a given ``PUSHGATEWAY_URL``, else a Pushgateway and
a Prometheus when installed), a pool of warm containers per function, the API on ``host:port``,
and the template's event sources; ``close()`` stops them in reverse order. With ``state_file``
set the running stack is described there (``make invoke`` reads it). docs/local-lambda.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from local import environment
from local.apigw import LocalApi
from local.container import PROJECT_ROOT
from local.pool import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_CONTAINERS, FunctionPool
from local.services import (
    MotoServer,
    Prometheus,
    Pushgateway,
    ServiceError,
    create_resources,
    preferred_port,
    write_prometheus_config,
)
from local.template import DEFAULT_REGION, SamTemplate

log = logging.getLogger("local.stack")

DEFAULT_BUILD_DIR = PROJECT_ROOT / ".aws-sam" / "build"
DEFAULT_RUN_DIR = PROJECT_ROOT / ".run"


def template_for(build_dir: Path) -> Path:
    """The template of a ``sam build`` output, else the project's own."""
    built = Path(build_dir) / "template.yaml"
    return built if built.is_file() else PROJECT_ROOT / "template.yaml"


@dataclass
class StackOptions:
    """How to run the stack; ``from_env`` documents the environment variables of ``make run``."""

    build_dir: Path = DEFAULT_BUILD_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    max_containers: int = DEFAULT_MAX_CONTAINERS
    idle_seconds: float | None = DEFAULT_IDLE_SECONDS
    shutdown_budget_ms: float | None = None
    require_api_key: str | None = None
    operator_api_key: str | None = None
    metrics: bool = True
    pushgateway_port: int = 9091
    prometheus_port: int = 9090
    event_sources: bool = True
    runtime_packages: str = "lambda"
    region: str = DEFAULT_REGION
    env_vars_file: Path | None = None
    host_env: Mapping[str, str] = field(default_factory=dict)
    state_file: Path | None = None
    echo: IO[str] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackOptions:
        """Options from ``make run``'s environment.

        ``PORT`` (8000), ``HOST`` (127.0.0.1), ``LOCAL_MAX_CONTAINERS`` (8 per function),
        ``LOCAL_IDLE_SECONDS`` (120: a container idle that long is retired; 0: never),
        ``LOCAL_SHUTDOWN_BUDGET_MS`` (500: from SIGTERM to SIGKILL when a container is retired),
        ``LOCAL_REQUIRE_API_KEY`` (off), ``LOCAL_OPERATOR_API_KEY`` (off: the key of the operator
        routes, POST /ab/...; with only LOCAL_REQUIRE_API_KEY set they refuse every key),
        ``LOCAL_METRICS`` (1: start Pushgateway and Prometheus
        when installed), ``LOCAL_PUSHGATEWAY_PORT`` (9091), ``LOCAL_PROMETHEUS_PORT`` (9090),
        ``LOCAL_EVENT_SOURCES`` (1: fire rate() schedules, poll SQS queues),
        ``LOCAL_RUNTIME_PACKAGES`` (``lambda`` or ``venv``), ``LOCAL_BUILD_DIR`` (.aws-sam/build),
        ``LOCAL_RUN_DIR`` (.run), ``AWS_REGION`` (us-east-1), ``ENV_VARS`` (an --env-vars file),
        plus ``environment.FORWARDED_ENV`` for the functions.
        """

        def flag(name: str, default: bool) -> bool:
            value = env.get(name, "")
            return default if value == "" else value.lower() not in ("0", "false", "no", "off")

        run_dir = Path(env.get("LOCAL_RUN_DIR") or DEFAULT_RUN_DIR)
        return cls(
            build_dir=Path(env.get("LOCAL_BUILD_DIR") or DEFAULT_BUILD_DIR),
            run_dir=run_dir,
            host=env.get("HOST") or "127.0.0.1",
            port=int(env.get("PORT") or 8000),
            max_containers=int(env.get("LOCAL_MAX_CONTAINERS") or DEFAULT_MAX_CONTAINERS),
            idle_seconds=float(env["LOCAL_IDLE_SECONDS"]) if env.get("LOCAL_IDLE_SECONDS") else DEFAULT_IDLE_SECONDS,
            shutdown_budget_ms=float(env["LOCAL_SHUTDOWN_BUDGET_MS"]) if env.get("LOCAL_SHUTDOWN_BUDGET_MS") else None,
            require_api_key=env.get("LOCAL_REQUIRE_API_KEY") or None,
            operator_api_key=env.get("LOCAL_OPERATOR_API_KEY") or None,
            metrics=flag("LOCAL_METRICS", True),
            pushgateway_port=int(env.get("LOCAL_PUSHGATEWAY_PORT") or 9091),
            prometheus_port=int(env.get("LOCAL_PROMETHEUS_PORT") or 9090),
            event_sources=flag("LOCAL_EVENT_SOURCES", True),
            runtime_packages=env.get("LOCAL_RUNTIME_PACKAGES") or "lambda",
            region=env.get("AWS_REGION") or DEFAULT_REGION,
            env_vars_file=Path(env["ENV_VARS"]) if env.get("ENV_VARS") else None,
            host_env=dict(env),
            state_file=run_dir / "state.json",
        )


class LocalStack:
    """The local deployment (see the module doc). Use as a context manager or start()/close()."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.moto: MotoServer | None = None
        self.pushgateway: Pushgateway | None = None
        self.prometheus: Prometheus | None = None
        self.template: SamTemplate | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.api: LocalApi | None = None
        self.event_sources: Any = None
        self.aws_endpoint_url = ""
        self.pushgateway_url = ""
        self.service_env: dict[str, str] = {}
        self.resources: list[str] = []

    @property
    def log_dir(self) -> Path:
        return self.options.run_dir / "logs"

    @property
    def url(self) -> str:
        assert self.api is not None, "stack not started"
        return self.api.url

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        opts = self.options
        self.log_dir.mkdir(parents=True, exist_ok=True)
        given = environment.forwarded(opts.host_env)
        env_vars = environment.load_env_vars(opts.env_vars_file)
        template_path = template_for(opts.build_dir)

        self.aws_endpoint_url = given.get("AWS_ENDPOINT_URL", "")
        if not self.aws_endpoint_url:
            self.moto = MotoServer(log_path=self.log_dir / "moto.log").start()
            self.aws_endpoint_url = self.moto.url
        self.template = SamTemplate(template_path, region=opts.region, endpoint_url=self.aws_endpoint_url)
        if self.moto:
            self.resources = create_resources(self.template.local_resources(), self.aws_endpoint_url, opts.region)

        self.pushgateway_url = given.get("PUSHGATEWAY_URL", "")
        if not self.pushgateway_url and opts.metrics:
            self._start_metrics()

        self.service_env = {"AWS_ENDPOINT_URL": self.aws_endpoint_url}
        if self.pushgateway_url:
            self.service_env["PUSHGATEWAY_URL"] = self.pushgateway_url
        for logical_id in self.template.function_ids():
            function = self.template.function(logical_id, opts.build_dir)
            overrides = environment.function_overrides(
                logical_id, function.name, services=self.service_env, host_env=opts.host_env, env_vars=env_vars
            )
            self.pools[logical_id] = FunctionPool(
                function,
                overrides,
                max_containers=opts.max_containers,
                log_dir=self.log_dir,
                echo=opts.echo,
                runtime_packages=opts.runtime_packages,
                region=opts.region,
                idle_seconds=opts.idle_seconds,
                shutdown_budget_ms=opts.shutdown_budget_ms,
            )

        self.api = LocalApi(
            self.template.api_routes(),
            self.pools,
            stage=self.template.api_stage(),
            host=opts.host,
            port=opts.port,
            require_api_key=opts.require_api_key,
            operator_api_key=opts.operator_api_key,
        ).start()
        if opts.event_sources:
            from local.events import EventSources

            self.event_sources = EventSources(self.template, self.pools, self.aws_endpoint_url, opts.region).start()
        if opts.state_file:
            self._write_state()

    def _start_metrics(self) -> None:
        opts = self.options
        if not (Pushgateway.available() and Prometheus.available()):
            from local import prometheus_stack

            why = prometheus_stack.problem(Pushgateway.binary) or prometheus_stack.problem(Prometheus.binary)
            log.warning("no local metrics stack: %s", why)
            return
        pg_port = preferred_port(opts.pushgateway_port, "Pushgateway")
        self.pushgateway = Pushgateway(pg_port, log_path=self.log_dir / "pushgateway.log").start()
        self.pushgateway_url = self.pushgateway.url
        prom_port = preferred_port(opts.prometheus_port, "Prometheus")
        observability = PROJECT_ROOT / "observability"
        base = observability / "prometheus.yml"
        # Without the project's own config, still evaluate its alerting and recording rules.
        rules = sorted(p for p in observability.glob("prometheus_*.yml"))
        # A new run starts with new stores and a new Pushgateway: Prometheus starts empty too, or
        # the last run's series (within the 5-minute lookback) would add to this run's sums.
        shutil.rmtree(opts.run_dir / "prometheus-data", ignore_errors=True)
        for attempt_rules in (rules, []):
            config = write_prometheus_config(
                opts.run_dir / "prometheus.yml",
                f"127.0.0.1:{pg_port}",
                f"127.0.0.1:{prom_port}",
                base if base.is_file() else None,
                attempt_rules,
            )
            try:
                self.prometheus = Prometheus(
                    config, opts.run_dir / "prometheus-data", prom_port, log_path=self.log_dir / "prometheus.log"
                ).start()
                return
            except ServiceError as exc:
                # Metrics still reach the Pushgateway; only the scraping side is missing.
                log.error("%s", exc)
                if not attempt_rules or base.is_file():
                    return
                log.warning("retrying Prometheus without the rule files %s", ", ".join(map(str, rules)))

    def addresses(self) -> list[tuple[str, str, str]]:
        """(what, URL, detail) of everything this stack serves or uses."""
        assert self.template is not None and self.api is not None
        routes = ", ".join(f"{r.method} {r.path}" for r in self.api.routes)
        out = [("API", self.api.url, routes)]
        out.append(("AWS endpoint", self.aws_endpoint_url, f"moto: {', '.join(self.resources)}" if self.moto else "given AWS_ENDPOINT_URL"))
        if self.pushgateway:
            out.append(("Pushgateway", self.pushgateway.url, "functions push here"))
        elif self.pushgateway_url:
            out.append(("Pushgateway", self.pushgateway_url, "given PUSHGATEWAY_URL"))
        if self.prometheus:
            out.append(("Prometheus", self.prometheus.url, "scrapes the Pushgateway (honor_labels)"))
        out.append(("Logs", str(self.log_dir), "one file per container, plus moto/pushgateway/prometheus"))
        return out

    def seed(self, timeout: float = 300.0) -> SeedResult | None:
        """Run ``python -m local.seed`` when that module exists (demo data); None when absent.

        It gets the functions' shared environment (bucket and table names, AWS endpoint,
        Pushgateway), ``LOCAL_API_URL``, and the layer package on ``PYTHONPATH``. Its output
        (progress and the functions' JSON logs) goes to ``<run dir>/logs/seed.log``; the result
        carries the per-property summaries for the banner.
        """
        if importlib.util.find_spec("local.seed") is None:
            return None
        assert self.template is not None
        log_path = self.log_dir / "seed.log"
        summary_path = self.log_dir / "seed-summary.json"
        summary_path.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(self.template.globals_environment())
        env.update(self.service_env)
        env.update(
            {
                "AWS_REGION": self.options.region,
                "AWS_DEFAULT_REGION": self.options.region,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "LOCAL_API_URL": self.url,
                "SEED_SUMMARY_FILE": str(summary_path),
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "layers" / "shared"), str(PROJECT_ROOT)]),
            }
        )
        started = time.monotonic()
        with open(log_path, "wb") as log_file:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "local.seed"],
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                log.error("local.seed did not finish within %.0f s (see %s)", timeout, log_path)
                return SeedResult(False, [], log_path, time.monotonic() - started)
        if done.returncode != 0:
            log.error("local.seed failed with exit status %d (see %s)", done.returncode, log_path)
        try:
            summaries = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            summaries = []
        return SeedResult(done.returncode == 0, summaries, log_path, time.monotonic() - started)

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "api_url": self.url,
            "aws_endpoint_url": self.aws_endpoint_url,
            "pushgateway_url": self.pushgateway_url,
            "prometheus_url": self.prometheus.url if self.prometheus else "",
            "build_dir": str(self.options.build_dir),
            "function_env": self.service_env,
            # What the functions were given (demo traffic checks it points at its backend).
            "backend_api_url": environment.forwarded(self.options.host_env).get("BACKEND_API_URL", ""),
        }
        path = self.options.state_file
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def _remove_state(self) -> None:
        path = self.options.state_file
        if not path:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    def close(self) -> None:
        """Stop everything that was started, the API first (idempotent)."""
        self._remove_state()
        if self.event_sources is not None:
            self.event_sources.close()
            self.event_sources = None
        if self.api is not None:
            self.api.close()
        for pool in self.pools.values():
            pool.close()
        for service in (self.prometheus, self.pushgateway, self.moto):
            if service is not None:
                service.stop()


@dataclass
class SeedResult:
    """What ``LocalStack.seed`` did: success, one summary per demo property, its log, its time."""

    ok: bool
    summaries: list[dict]
    log_path: Path
    seconds: float


def running_state(state_file: Path) -> dict | None:
    """The state of a ``make run`` that is up: its process alive, its API listening and its AWS
    endpoint answering. The API is only connected to, never sent a request: every path of it
    invokes a function (``GET /`` too), whose cold start can outlast any probe's timeout."""
    try:
        state = json.loads(Path(state_file).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    up = listening(state.get("api_url") or "") and answers(state.get("aws_endpoint_url") or "")
    return state if up else None


def listening(url: str, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection at ``url``'s host and port."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            return False
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when an HTTP server answers at ``url`` (any status)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # our own URL
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
