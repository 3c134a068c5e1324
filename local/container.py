"""A local Lambda container: one long-lived ``python -m awslambdaric <handler>`` process.

The process is the real runtime interface client, talking to its own Runtime API emulator
(``local.runtime_api``), with the directory layout and environment of a Lambda sandbox:

- ``/var/task`` is the function's ``sam build`` output and the working directory;
- ``/opt/python`` (and ``/opt/python/lib/python3.11/site-packages``) of every layer follow it on
  ``PYTHONPATH``, in that order, as in Lambda;
- the runtime's own packages (boto3 and its dependencies, awslambdaric) come last.

By default the runtime's packages are *only* those: the interpreter runs with ``-S`` (no
site-packages) and gets a directory of links to exactly the packages the Lambda Python runtime
ships, so a dependency missing from the layer fails here as it would in AWS instead of being
quietly found in the development virtualenv. ``runtime_packages="venv"`` puts the whole
virtualenv there instead.

The container keeps its module state across invocations (warm reuse), serves one invocation at
a time, and is killed when an invocation overruns the function's timeout -- the next invocation
needs a new container, as in Lambda. Its stdout/stderr plus START/END/REPORT lines go to a log
file per container (and, when asked, to a stream with the container id as prefix).
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping

from local.runtime_api import Invocation, RuntimeApi
from local.template import ACCOUNT_ID, DEFAULT_REGION, LambdaFunction

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# What the Lambda python3.11 runtime itself provides besides the standard library.
RUNTIME_DISTRIBUTIONS = (
    "awslambdaric", "simplejson", "snapshot-restore-py",
    "boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3",
)

# Lambda grants a synchronous invocation's result at most 6 MB.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024

# Lambda gives a function's initialisation 10 s; when it overruns, init is retried inside the
# first invocation under the function's timeout. Locally the init simply gets both budgets.
INIT_TIMEOUT_SECONDS = 10.0

# Variables the container inherits from the runner so that TLS and proxies work as on the host
# (a real SENTRY_DSN behind a corporate proxy); nothing else leaks in from the host environment.
PASSTHROUGH_ENV = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)


class ContainerError(RuntimeError):
    """A container could not be started (missing build output, runtime not installed)."""


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
    env.update({
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
    })
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
        init_timeout: seconds the handler's import may take before the first invocation times out.

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
    ) -> None:
        if runtime_packages not in ("lambda", "venv"):
            raise ValueError(f"runtime_packages must be 'lambda' or 'venv', not {runtime_packages!r}")
        self.function = function
        self.overrides = dict(overrides or {})
        self.region = region
        self.runtime_packages = runtime_packages
        self.init_timeout = init_timeout
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
        if self._dead or self._stopped:
            return False
        return self._process is None or self._process.poll() is None

    @property
    def invocations(self) -> int:
        return self._invocations

    def _python_path(self) -> tuple[list[Path], Path]:
        paths = [self.function.code_dir]
        for layer in self.function.layer_dirs:
            paths += [layer / "python" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                      / "site-packages", layer / "python"]
        paths = [p for p in paths if p.is_dir()]
        if self.runtime_packages == "venv":
            import site
            runtime_dir = Path(site.getsitepackages()[0])
        else:
            runtime_dir = runtime_packages_dir()
        return paths + [runtime_dir], runtime_dir

    def start(self) -> "LambdaContainer":
        """Spawn the runtime process; its init (the handler's import) runs in the background."""
        if self._process is not None:
            return self
        if not self.function.code_dir.is_dir():
            raise ContainerError(f"{self.function.key}: no build output at {self.function.code_dir}; "
                                 "run `make build` (sam build) first")
        python_path, runtime_dir = self._python_path()
        self._api = RuntimeApi(self.arn, on_start=self._on_start).start()
        env = lambda_environment(
            self.function, runtime_api=self._api.address, log_stream=self.log_stream,
            python_path=python_path, runtime_dir=runtime_dir, region=self.region,
            overrides=self.overrides,
        )
        flags = ["-S"] if self.runtime_packages == "lambda" else []
        self._spawned_at = time.monotonic()
        self._process = subprocess.Popen(
            [sys.executable, *flags, "-m", "awslambdaric", self.function.handler],
            cwd=self.function.code_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # Own process group: Ctrl-C in a terminal reaches the runner, which stops containers
            # in order; a timeout kills the whole group (the handler may have started children).
            start_new_session=True,
        )
        for stream in (self._process.stdout, self._process.stderr):
            threading.Thread(target=self._log.pump, args=(stream,), daemon=True,
                             name=f"log-{self.function.key}-{self.id}").start()
        return self

    def stop(self) -> None:
        """Stop the process and the Runtime API (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._kill(graceful=True)
        self._log.close()

    def _kill(self, graceful: bool = False) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
                process.wait(timeout=2 if graceful else 5)
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self._api is not None:
            self._api.close()
        self._dead = True

    def __enter__(self) -> "LambdaContainer":
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
            if not self.alive:
                raise ContainerError(f"container {self.id} of {self.function.key} is not running")
            cold = self._process is None or self._invocations == 0
            self.start()
            assert self._api is not None and self._process is not None
            invocation = Invocation(payload=payload, timeout=timeout or self.function.timeout,
                                    client_context=client_context)
            self._api.submit(invocation)
            self._wait(invocation)
            self._invocations += 1
            return self._result(invocation, cold)

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
        document = {"errorType": "Sandbox.Timedout",
                    "errorMessage": f"RequestId: {invocation.request_id} Error: {message}"}
        if invocation.finish("timeout", json.dumps(document).encode(), "Sandbox.Timedout"):
            self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                            f"{invocation.request_id} {message}")
            self._kill()

    def _finish_after_exit(self, invocation: Invocation) -> None:
        assert self._process is not None and self._api is not None
        if self._api.init_error is not None:
            invocation.finish("init_error", json.dumps(self._api.init_error).encode(),
                              self._api.init_error.get("errorType"))
        else:
            code = self._process.returncode
            status = f"signal: {-code}" if code < 0 else f"exit status {code}"
            document = {"errorType": "Runtime.ExitError",
                        "errorMessage": f"RequestId: {invocation.request_id} Error: Runtime exited "
                                        f"with error: {status}"}
            invocation.finish("exit", json.dumps(document).encode(), "Runtime.ExitError")
        self._kill()

    def _result(self, invocation: Invocation, cold: bool) -> InvocationResult:
        outcome = invocation.outcome or "exit"
        payload = invocation.result
        if outcome == "response" and len(payload) > MAX_RESPONSE_BYTES:
            outcome = "error"
            payload = json.dumps({
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": f"Response payload size ({len(payload)} bytes) exceeded maximum "
                                f"allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            }).encode()
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
        report = (f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {max(1, int(duration_ms + 0.999))} ms\t"
                  f"Memory Size: {self.function.memory_mb} MB\t")
        if max_memory is not None:
            report += f"Max Memory Used: {max_memory} MB\t"
        if init_ms is not None:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        if invocation.outcome not in ("response", "error"):
            report += f"Status: {invocation.error_type or invocation.outcome}"
        self._log.write(f"END RequestId: {rid}")
        self._log.write(report.rstrip("\t"))


def _max_rss_mb(pid: int) -> int | None:
    """The process's peak resident memory (``VmHWM``), what Lambda reports as Max Memory Used."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
