"""A local Lambda container: one long-lived ``python -m awslambdaric <handler>`` process.

The real runtime interface client against its own Runtime API emulator (``local.runtime_api``),
with a Lambda sandbox's layout (``/var/task``, the layers' ``/opt/python``, then only the Lambda
runtime's own packages unless ``runtime_packages="venv"``), its layers' extensions started first,
warm across invocations, killed on a timeout. ``retire()`` (and ``stop()``) shuts it down as
Lambda reaps an execution environment: no new invocation, SIGTERM to the runtime when an
extension registered, SHUTDOWN to the extensions, SIGKILL after ``LOCAL_SHUTDOWN_BUDGET_MS``.
Why, and the log lines it writes: docs/local-lambda.md ("Lifecycle").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from local.runtime_api import Invocation, RuntimeApi
from local.template import ACCOUNT_ID, DEFAULT_REGION, LambdaFunction

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# What the Lambda python3.11 runtime itself provides besides the standard library.
RUNTIME_DISTRIBUTIONS = (
    "awslambdaric",
    "simplejson",
    "snapshot-restore-py",
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
)

# Lambda grants a synchronous invocation's result at most 6 MB.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024

# Lambda gives a function's initialisation 10 s; when it overruns, init is retried inside the
# first invocation under the function's timeout. Locally the init simply gets both budgets.
INIT_TIMEOUT_SECONDS = 10.0

# How long the runtime and the extensions have, from SIGTERM and SHUTDOWN, before SIGKILL.
# Lambda allows the whole shutdown phase 2,000 ms when external extensions are registered; the
# runtime here is held to what it should plan for.
DEFAULT_SHUTDOWN_BUDGET_MS = 500.0

# Variables the container inherits from the runner so that TLS and proxies work as on the host
# (a real SENTRY_DSN behind a corporate proxy); nothing else leaks in from the host environment.
PASSTHROUGH_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


class ContainerError(RuntimeError):
    """A container could not be started (missing build output, runtime not installed)."""


def shutdown_budget_from_env(env: Mapping[str, str] | None = None) -> float:
    """``LOCAL_SHUTDOWN_BUDGET_MS`` from ``env`` (default: the process environment), else 500."""
    value = (os.environ if env is None else env).get("LOCAL_SHUTDOWN_BUDGET_MS", "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_SHUTDOWN_BUDGET_MS
    except ValueError:
        raise ContainerError(f"LOCAL_SHUTDOWN_BUDGET_MS must be a number of milliseconds, not {value!r}") from None


def extension_executables(layer_dirs: tuple[Path, ...] | list[Path]) -> dict[str, Path]:
    """The external extensions of a function: ``<layer>/extensions/<name>`` executables.

    Lambda merges the layers into ``/opt`` in order, so a later layer's file replaces an
    earlier one of the same name; extensions are started in the order of their names.
    """
    found: dict[str, Path] = {}
    for layer in layer_dirs:
        folder = Path(layer) / "extensions"
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and os.access(path, os.X_OK):
                    found[path.name] = path
    return dict(sorted(found.items()))


@dataclass
class ShutdownReport:
    """How a container's shutdown went (``LambdaContainer.shutdown_report``).

    ``runtime_status`` is the runtime process's exit status (negative: the signal that ended
    it, -9 for SIGKILL), None when it had never been started; ``extensions`` the same per
    extension.
    """

    reason: str
    budget_ms: float
    sigterm: bool = False
    killed: bool = False
    runtime_status: int | None = None
    extensions: dict[str, int | None] = field(default_factory=dict)
    duration_ms: float = 0.0


@dataclass
class InvocationResult:
    """What an invocation returned, as the Lambda Invoke API would report it.

    ``payload`` is the function's result (or, with ``function_error`` set to ``"Unhandled"``,
    the error document); ``outcome`` says how it ended: ``response``, ``error``, ``timeout``,
    ``init_error`` or ``exit``.
    """

    request_id: str
    function: str
    container_id: str
    payload: bytes
    outcome: str
    function_error: str | None
    cold_start: bool
    duration_ms: float
    init_ms: float | None = None

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None

    @property
    def ok(self) -> bool:
        return self.function_error is None


def runtime_packages_dir(cache_root: Path | None = None) -> Path:
    """A directory holding links to the packages of the Lambda runtime, taken from this venv.

    Built once per set of installed versions (the directory name is their hash), atomically,
    so concurrent test workers can share it.

    Raises:
        ContainerError: one of ``RUNTIME_DISTRIBUTIONS`` is not installed here.
    """
    cache_root = cache_root or PROJECT_ROOT / ".run" / "lambda-runtime"
    entries: dict[str, Path] = {}
    versions = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "snapshot-restore-py":  # only needed for SnapStart
                continue
            raise ContainerError(f"{name} is not installed; run `make setup`") from None
        versions.append(f"{name}=={dist.version}")
        site = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files or ():
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".data"):
                continue
            entries[top] = site / top
    digest = hashlib.sha256("\n".join([sys.prefix, *sorted(versions)]).encode()).hexdigest()[:12]
    target = cache_root / f"python{sys.version_info.major}.{sys.version_info.minor}-{digest}"
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_root))
    for top, source in sorted(entries.items()):
        if source.exists():
            (staging / top).symlink_to(source)
    try:
        staging.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def lambda_environment(
    function: LambdaFunction,
    *,
    runtime_api: str,
    log_stream: str,
    python_path: list[Path],
    runtime_dir: Path,
    region: str = DEFAULT_REGION,
    overrides: Mapping[str, str] | None = None,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a container process, as Lambda composes it.

    Lambda's own variables first, then the function's template environment, then ``overrides``
    (local endpoints, an ``--env-vars`` file: here any variable may be set, even those Lambda
    reserves, such as credentials). ``AWS_LAMBDA_RUNTIME_API`` is always the container's own.
    """
    host_env = os.environ if host_env is None else host_env
    env = {name: host_env[name] for name in PASSTHROUGH_ENV if host_env.get(name)}
    if any(name.lower().endswith("_proxy") for name in env):
        # Local endpoints (moto, the Pushgateway) must never go through a proxy.
        existing = env.get("NO_PROXY") or env.get("no_proxy") or ""
        env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, [existing, "127.0.0.1", "localhost"]))
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONPATH": os.pathsep.join(str(p) for p in python_path),
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            "LAMBDA_RUNTIME_DIR": str(runtime_dir),
            "_HANDLER": function.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            # moto accepts any credentials; real ones would only be a risk here.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    env.update(function.environment)
    env.update({name: str(value) for name, value in (overrides or {}).items()})
    env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
    return env


class _LogSink:
    """Writes a container's lines to its log file and, optionally, a prefixed stream."""

    def __init__(self, path: Path | None, echo: IO[str] | None, prefix: str) -> None:
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        self._echo = echo
        self._prefix = prefix
        self._lock = threading.Lock()
        self.pumps: list[threading.Thread] = []

    def write(self, line: str) -> None:
        line = line.rstrip("\n")
        with self._lock:
            if self._file:
                self._file.write(line + "\n")
            if self._echo:
                try:
                    self._echo.write(f"{self._prefix} {line}\n")
                    self._echo.flush()
                except ValueError:  # the stream was closed under us (interpreter exit)
                    pass

    def pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.write(raw.decode("utf-8", "replace"))
        stream.close()

    def follow(self, process: subprocess.Popen, name: str) -> None:
        """Copy the process's stdout and stderr here, each from a thread of its own."""
        for stream in (process.stdout, process.stderr):
            thread = threading.Thread(target=self.pump, args=(stream,), daemon=True, name=name)
            thread.start()
            self.pumps.append(thread)

    def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds in all) for the pumps to copy the last lines."""
        deadline = time.monotonic() + timeout
        for thread in self.pumps:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


class LambdaContainer:
    """One warm Lambda execution environment of ``function``.

    Args:
        function: what to run (from ``SamTemplate.function`` or built by hand in tests).
        overrides: environment on top of the function's own (see ``lambda_environment``).
        region: ``AWS_REGION`` of the container.
        log_dir: where ``<function>-<container id>.log`` is written (None: no file).
        echo: a text stream that also gets every log line, prefixed ``[<function> <id>]``.
        runtime_packages: ``"lambda"`` (only the runtime's packages) or ``"venv"`` (see module doc).
        init_timeout: seconds the handler's import may take before the first invocation times out
            (and the extensions, each, to register).
        shutdown_budget_ms: from SIGTERM/SHUTDOWN to SIGKILL at retirement (default:
            ``LOCAL_SHUTDOWN_BUDGET_MS`` or 500).

    Raises:
        ContainerError: ``start()`` cannot find the function's build output.
    """

    def __init__(
        self,
        function: LambdaFunction,
        overrides: Mapping[str, str] | None = None,
        *,
        region: str = DEFAULT_REGION,
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        runtime_packages: str = "lambda",
        init_timeout: float = INIT_TIMEOUT_SECONDS,
        shutdown_budget_ms: float | None = None,
    ) -> None:
        if runtime_packages not in ("lambda", "venv"):
            raise ValueError(f"runtime_packages must be 'lambda' or 'venv', not {runtime_packages!r}")
        self.function = function
        self.overrides = dict(overrides or {})
        self.region = region
        self.runtime_packages = runtime_packages
        self.init_timeout = init_timeout
        self.shutdown_budget_ms = shutdown_budget_from_env() if shutdown_budget_ms is None else shutdown_budget_ms
        stream_id = uuid.uuid4().hex
        self.id = stream_id[:8]
        self.log_stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{stream_id}"
        self.log_path = (Path(log_dir) / f"{function.key}-{self.id}.log") if log_dir else None
        self._log = _LogSink(self.log_path, echo, f"[{function.key} {self.id}]")
        self._api: RuntimeApi | None = None
        self._process: subprocess.Popen | None = None
        self._busy = threading.Lock()
        self._spawned_at = 0.0
        self._invocations = 0
        self._dead = False
        self._stopped = False
        self._extension_processes: dict[str, subprocess.Popen] = {}
        self._init_failure: dict | None = None
        self._state = threading.Lock()
        self._retiring = False
        self._shutdown_started = False
        self._shutdown_done = threading.Event()
        self._idle_since = time.monotonic()
        self.shutdown_report: ShutdownReport | None = None

    # --- life cycle -----------------------------------------------------------------------------

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function.name}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        """True while the container can take invocations (started lazily on the first one)."""
        if self._dead or self._stopped or self._retiring:
            return False
        return self._process is None or self._process.poll() is None

    @property
    def idle_since(self) -> float:
        """``time.monotonic()`` at the end of the last invocation (or at creation)."""
        return self._idle_since

    @property
    def extensions(self) -> dict[str, int]:
        """The pid of each external extension started, by name."""
        return {name: process.pid for name, process in self._extension_processes.items()}

    @property
    def invocations(self) -> int:
        return self._invocations

    def _python_path(self) -> tuple[list[Path], Path]:
        paths = [self.function.code_dir]
        for layer in self.function.layer_dirs:
            paths += [
                layer / "python" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages",
                layer / "python",
            ]
        paths = [p for p in paths if p.is_dir()]
        if self.runtime_packages == "venv":
            import site

            runtime_dir = Path(site.getsitepackages()[0])
        else:
            runtime_dir = runtime_packages_dir()
        return paths + [runtime_dir], runtime_dir

    def start(self) -> LambdaContainer:
        """Start the extensions, then spawn the runtime process.

        Returns once every extension has registered; the runtime's init (the handler's import)
        runs in the background.
        """
        if self._api is not None:
            return self
        if not self.function.code_dir.is_dir():
            raise ContainerError(f"{self.function.key}: no build output at {self.function.code_dir}; run `make build` (sam build) first")
        python_path, runtime_dir = self._python_path()
        self._api = RuntimeApi(self.arn, on_start=self._on_start, handler=self.function.handler).start()
        env = lambda_environment(
            self.function,
            runtime_api=self._api.address,
            log_stream=self.log_stream,
            python_path=python_path,
            runtime_dir=runtime_dir,
            region=self.region,
            overrides=self.overrides,
        )
        flags = ["-S"] if self.runtime_packages == "lambda" else []
        self._spawned_at = time.monotonic()
        # Extension init comes first, then the runtime's, as in Lambda.
        self._start_extensions(env)
        if self._init_failure is not None:
            self._dead = True
            return self
        self._process = subprocess.Popen(
            [sys.executable, *flags, "-m", "awslambdaric", self.function.handler],
            cwd=self.function.code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Own process group: Ctrl-C in a terminal reaches the runner, which stops containers
            # in order; a timeout kills the whole group (the handler may have started children).
            start_new_session=True,
        )
        self._log.follow(self._process, f"log-{self.function.key}-{self.id}")
        return self

    def _start_extensions(self, env: Mapping[str, str]) -> None:
        """Start the layers' extensions; wait until each has registered and asked for an event."""
        assert self._api is not None
        for name, path in extension_executables(self.function.layer_dirs).items():
            try:
                process = subprocess.Popen(
                    [str(path)],
                    cwd=self.function.code_dir,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                self._fail_init(name, "Extension.LaunchError", f"extension {name} could not start: {exc}")
                return
            self._extension_processes[name] = process
            self._log.follow(process, f"log-{self.function.key}-{self.id}-{name}")
        deadline = time.monotonic() + self.init_timeout
        pending = dict(self._extension_processes)
        while pending:
            ready = {e.name: e for e in self._api.extensions if e.ready.is_set()}
            for name in [n for n in pending if n in ready]:
                del pending[name]
                events = ", ".join(ready[name].events)
                self._log.write(f"EXTENSION\tName: {name}\tState: Ready\tEvents: [{events}]")
            for name, process in pending.items():
                if process.poll() is not None:
                    self._fail_init(
                        name, "Extension.Crash", f"extension {name} exited with status {process.returncode} before it registered"
                    )
                    return
            if pending and time.monotonic() > deadline:
                name = next(iter(pending))
                self._fail_init(
                    name,
                    "Extension.Crash",
                    f"extension {name} did not register (as Lambda-Extension-Name: {name}) within {self.init_timeout:.1f} s",
                )
                return
            if pending:
                time.sleep(0.002)

    def _fail_init(self, name: str, error_type: str, message: str) -> None:
        self._log.write(f"EXTENSION\tName: {name}\tState: {error_type.split('.')[-1]}\tEvents: []")
        self._init_failure = {"errorType": error_type, "errorMessage": message}
        self._shutdown("failure", graceful=False)

    def stop(self) -> None:
        """Retire the container (see ``retire``) and close its log (idempotent)."""
        if self._stopped:
            return
        self.retire()
        self._stopped = True
        self._log.close()

    def retire(self, reason: str = "spindown", drain: float = 0.0) -> ShutdownReport | None:
        """Shut the container down as Lambda does (see the module doc); idempotent.

        From this call on the container takes no new invocation; one already running is given
        up to ``drain`` seconds to finish before the shutdown goes ahead regardless (it then
        ends as an ``exit`` error). Returns how the shutdown went (None if never started).
        """
        with self._state:
            first = not self._retiring
            self._retiring = True
        if not first:
            self._shutdown_done.wait(self.shutdown_budget_ms / 1000 + 15)
            return self.shutdown_report
        idle = self._busy.acquire(timeout=drain) if drain > 0 else self._busy.acquire(blocking=False)
        try:
            self._shutdown(reason, graceful=True)
        finally:
            if idle:
                self._busy.release()
        return self.shutdown_report

    def _kill(self, reason: str = "failure") -> None:
        """Shut down at once after a timeout or a crash (no SIGTERM, no budget for the runtime)."""
        self._shutdown(reason, graceful=False)

    def _shutdown(self, reason: str, graceful: bool) -> None:
        with self._state:
            first = not self._shutdown_started
            self._shutdown_started = True
        if not first:
            self._shutdown_done.wait(self.shutdown_budget_ms / 1000 + 15)
            return
        try:
            self._shut_down(reason, graceful)
        finally:
            self._dead = True
            self._shutdown_done.set()

    def _shut_down(self, reason: str, graceful: bool) -> None:
        process, api = self._process, self._api
        if process is None and not self._extension_processes:
            if api is not None:
                api.close()
            return
        budget = self.shutdown_budget_ms / 1000
        started = time.monotonic()
        deadline = started + budget
        report = ShutdownReport(reason=reason, budget_ms=self.shutdown_budget_ms)
        self._log.write(f"SHUTDOWN Reason: {reason}\tBudget: {self.shutdown_budget_ms:.0f} ms")
        registered = api.extensions if api is not None else []
        if process is not None and process.poll() is None:
            if graceful and registered:
                # Lambda signals the runtime process itself, not its children.
                _signal(process.pid, signal.SIGTERM, group=False)
                report.sigterm = True
            else:
                _signal(process.pid, signal.SIGKILL)
        if api is not None:
            api.shutdown(reason, int((time.time() + budget) * 1000))
        everything = ([process] if process is not None else []) + list(self._extension_processes.values())
        while any(p.poll() is None for p in everything) and time.monotonic() < deadline:
            time.sleep(0.005)
        for p in everything:
            if p.poll() is None:
                report.killed = report.killed or p is process
            # The whole group: whatever the process started goes with it.
            _signal(p.pid, signal.SIGKILL)
        for p in everything:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if api is not None:
            api.close()
        self._log.drain(1.0)
        report.duration_ms = (time.monotonic() - started) * 1000
        report.runtime_status = process.returncode if process is not None else None
        report.extensions = {name: p.returncode for name, p in self._extension_processes.items()}
        self.shutdown_report = report
        parts = [f"SHUTDOWN Duration: {report.duration_ms:.2f} ms"]
        if process is not None:
            how = (
                "SIGTERM, then SIGKILL after the budget"
                if report.killed and report.sigterm
                else "after SIGTERM"
                if report.sigterm
                else "SIGKILL, no extension registered"
                if graceful
                else "SIGKILL"
            )
            parts.append(f"Runtime: {_status(process.returncode)} ({how})")
        for name, p in self._extension_processes.items():
            parts.append(f"Extension {name}: {_status(p.returncode)}")
        self._log.write("\t".join(parts))

    def __enter__(self) -> LambdaContainer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- invocations ----------------------------------------------------------------------------

    def invoke(self, event: Any, *, timeout: float | None = None, client_context: str | None = None) -> InvocationResult:
        """Run one event through the handler and wait for its result.

        ``event`` is JSON-serialisable data or the raw bytes of a JSON document. ``timeout``
        defaults to the function's. A timed-out invocation kills the container.

        Raises:
            ContainerError: the container is stopped or could not start.
        """
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        with self._busy:
            if not self.alive and self._init_failure is None:
                raise ContainerError(f"container {self.id} of {self.function.key} is not running")
            cold = self._process is None or self._invocations == 0
            try:
                self.start()
                invocation = Invocation(payload=payload, timeout=timeout or self.function.timeout, client_context=client_context)
                if self._init_failure is not None:
                    invocation.finish("init_error", json.dumps(self._init_failure).encode(), self._init_failure["errorType"])
                else:
                    assert self._api is not None and self._process is not None
                    self._api.submit(invocation)
                    self._wait(invocation)
                self._invocations += 1
                return self._result(invocation, cold)
            finally:
                self._idle_since = time.monotonic()

    def _wait(self, invocation: Invocation) -> None:
        assert self._process is not None
        init_budget = self.init_timeout + invocation.timeout
        while not invocation.done.wait(0.05):
            now = time.monotonic()
            if self._process.poll() is not None:
                # Give the log pumps and a last in-flight POST a moment before judging.
                invocation.done.wait(0.1)
                self._finish_after_exit(invocation)
                return
            if invocation.deadline is not None and now > invocation.deadline:
                self._time_out(invocation, f"Task timed out after {invocation.timeout:.2f} seconds")
                return
            if invocation.started_at is None and now - invocation.received_at > init_budget:
                self._time_out(invocation, f"INIT did not finish within {init_budget:.2f} seconds")
                return

    def _time_out(self, invocation: Invocation, message: str) -> None:
        document = {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {invocation.request_id} Error: {message}"}
        if invocation.finish("timeout", json.dumps(document).encode(), "Sandbox.Timedout"):
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {invocation.request_id} {message}")
            self._kill("timeout")

    def _finish_after_exit(self, invocation: Invocation) -> None:
        assert self._process is not None and self._api is not None
        if self._api.init_error is not None:
            invocation.finish("init_error", json.dumps(self._api.init_error).encode(), self._api.init_error.get("errorType"))
        else:
            code = self._process.returncode
            status = f"signal: {-code}" if code < 0 else f"exit status {code}"
            document = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {invocation.request_id} Error: Runtime exited with error: {status}",
            }
            invocation.finish("exit", json.dumps(document).encode(), "Runtime.ExitError")
        self._kill()

    def _result(self, invocation: Invocation, cold: bool) -> InvocationResult:
        outcome = invocation.outcome or "exit"
        payload = invocation.result
        if outcome == "response" and len(payload) > MAX_RESPONSE_BYTES:
            outcome = "error"
            payload = json.dumps(
                {
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": f"Response payload size ({len(payload)} bytes) exceeded maximum "
                    f"allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                }
            ).encode()
        started = invocation.started_at or invocation.finished_at or time.monotonic()
        finished = invocation.finished_at or time.monotonic()
        duration_ms = (finished - started) * 1000
        init_ms = (started - self._spawned_at) * 1000 if cold and invocation.started_at else None
        self._report(invocation, duration_ms, init_ms)
        return InvocationResult(
            request_id=invocation.request_id,
            function=self.function.key,
            container_id=self.id,
            payload=payload,
            outcome=outcome,
            function_error=None if outcome == "response" else "Unhandled",
            cold_start=cold,
            duration_ms=duration_ms,
            init_ms=init_ms,
        )

    def _on_start(self, invocation: Invocation) -> None:
        self._log.write(f"START RequestId: {invocation.request_id} Version: $LATEST")

    def _report(self, invocation: Invocation, duration_ms: float, init_ms: float | None) -> None:
        """Lambda's platform lines, so a container log reads like a CloudWatch log stream."""
        rid = invocation.request_id
        max_memory = _max_rss_mb(self._process.pid) if self._process else None
        report = (
            f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms\t"
            f"Memory Size: {self.function.memory_mb} MB\t"
        )
        if max_memory is not None:
            report += f"Max Memory Used: {max_memory} MB\t"
        if init_ms is not None:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        if invocation.outcome not in ("response", "error"):
            report += f"Status: {invocation.error_type or invocation.outcome}"
        self._log.write(f"END RequestId: {rid}")
        self._log.write(report.rstrip("\t"))


def _signal(pid: int, signum: int, group: bool = True) -> None:
    """Send ``signum`` to the process (or its whole group: its own session); gone is fine."""
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _status(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _max_rss_mb(pid: int) -> int | None:
    """The process's peak resident memory (``VmHWM``), what Lambda reports as Max Memory Used."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
