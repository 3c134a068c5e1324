"""Real Prometheus Pushgateway and Prometheus servers on free loopback ports, for tests and benches.

Each server is a context manager that starts a binary of the pinned stack
(``prometheus-pushgateway``, ``prometheus``, from ``.tools/prometheus-stack/bin``, see
``local.prometheus_stack``) on ``127.0.0.1`` with a free port and a temporary directory, waits
until it is ready, and stops it on exit. Nothing uses the default ports, so a machine's own
Prometheus services may keep running.

Example::

    with Pushgateway() as pgw, Prometheus(pgw) as prom:
        ...  # push to pgw.url
        pgw.sum("pricing_requests_total")                      # what the Pushgateway holds
        prom.wait_for_value("sum(pricing_requests_total)", 42)  # what Prometheus scraped

Also here: ``SilentServer`` (accepts connections, never answers), ``SyntheticContainer`` (a warm
"Lambda container": one Python process with its own registry, pushing after each invocation),
and ``require_binary`` (a missing binary of the pinned stack skips outside CI and fails when
``CI=true``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from local import prometheus_stack

ROOT = Path(__file__).resolve().parents[2]
PUSHGATEWAY_BIN = prometheus_stack.PUSHGATEWAY
PROMETHEUS_BIN = prometheus_stack.PROMETHEUS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str) -> str:
    """The pinned stack's binary ``name``; without it, skip the test (or fail it under ``CI=true``)."""
    message = prometheus_stack.problem(name)
    if message is None:
        return prometheus_stack.require(name)
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)
    raise AssertionError("unreachable")


def bcrypt_hash(password: str) -> str:
    """The bcrypt hash the exporter toolkit's ``basic_auth_users`` expects (low cost: tests)."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _wait(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f": {last_error}" if last_error else ""))


class _Server:
    """A child process serving HTTP on 127.0.0.1:port, with optional basic auth."""

    binary = ""
    ready_path = "/-/ready"

    def __init__(self, port: int | None = None, basic_auth: Mapping[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.basic_auth = dict(basic_auth or {})
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.binary}-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "server.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _web_config_args(self) -> list[str]:
        if not self.basic_auth:
            return []
        users = "\n".join(f'  {u}: "{bcrypt_hash(p)}"' for u, p in self.basic_auth.items())
        path = self.dir / "web.yml"
        path.write_text(f"basic_auth_users:\n{users}\n")
        return [f"--web.config.file={path}"]

    def _auth_header(self) -> dict[str, str]:
        if not self.basic_auth:
            return {}
        user, password = next(iter(self.basic_auth.items()))
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def start(self) -> _Server:
        binary = require_binary(self.binary)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed just below
        self.proc = subprocess.Popen([binary, *self._args()], stdout=log, stderr=log, cwd=self.dir)
        log.close()
        try:
            _wait(lambda: self.get(self.ready_path, timeout=1.0) is not None, 30, f"{self.binary} ready")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.binary} did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (in-memory state is gone)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, path: str, timeout: float = 5.0) -> bytes | None:
        """The body of a 200 answer to GET ``path``, or None for any other answer."""
        req = urllib.request.Request(self.url + path, headers=self._auth_header())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read() if resp.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None


class Pushgateway(_Server):
    """``prometheus-pushgateway`` without persistence; ``basic_auth={"user": "password"}`` secures it.

    Runs without the consistency check, as every Pushgateway of the project does
    (``prometheus_stack.PUSHGATEWAY_FLAGS``); ``checked=True`` keeps the check (benches comparing
    the two). ``extra_args`` are added to the command line.
    """

    binary = PUSHGATEWAY_BIN

    def __init__(
        self, port: int | None = None, basic_auth: Mapping[str, str] | None = None, extra_args: Iterable[str] = (), checked: bool = False
    ) -> None:
        super().__init__(port=port, basic_auth=basic_auth)
        self.extra_args = list(extra_args)
        self.checked = checked

    def _args(self) -> list[str]:
        # Debian's default persistence file is shared by every instance on the machine: keep
        # each test's groups in memory only.
        return [
            f"--web.listen-address={self.address}",
            "--persistence.file=",
            "--log.level=warn",
            *self._web_config_args(),
            *(() if self.checked else prometheus_stack.PUSHGATEWAY_FLAGS),
            *(a for a in self.extra_args if a not in prometheus_stack.PUSHGATEWAY_FLAGS),
        ]

    def text(self) -> str:
        body = self.get("/metrics")
        if body is None:
            raise RuntimeError("Pushgateway /metrics did not answer 200")
        return body.decode()

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample named ``name`` the Pushgateway exposes, as (labels, value)."""
        from prometheus_client.parser import text_string_to_metric_families

        found = []
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                if sample.name == name:
                    found.append((dict(sample.labels), sample.value))
        return found

    def sum(self, name: str, **labels: str) -> float:
        """The sum over all groups of the samples named ``name`` matching ``labels``."""
        return sum(v for lbl, v in self.samples(name) if all(lbl.get(k) == str(x) for k, x in labels.items()))

    def groups(self) -> list[dict]:
        """``/api/v1/metrics``: every group with its grouping labels and last push time."""
        body = self.get("/api/v1/metrics")
        if body is None:
            raise RuntimeError("Pushgateway /api/v1/metrics did not answer 200")
        return json.loads(body)["data"]

    def instances(self, job_prefix: str = "pricing-") -> set[str]:
        """The ``instance`` labels of the groups whose job starts with ``job_prefix``."""
        return {g["labels"].get("instance", "") for g in self.groups() if g["labels"].get("job", "").startswith(job_prefix)}


class Prometheus(_Server):
    """``prometheus`` scraping one Pushgateway (or a list of shards, all in the job
    ``pushgateway``) every ``scrape_interval`` with ``honor_labels``."""

    binary = PROMETHEUS_BIN

    def __init__(self, pushgateway: Pushgateway | list[Pushgateway], scrape_interval: str = "1s", port: int | None = None) -> None:
        super().__init__(port=port)
        self.pushgateways = list(pushgateway) if isinstance(pushgateway, (list, tuple)) else [pushgateway]
        self.pushgateway = self.pushgateways[0]
        self.scrape_interval = scrape_interval

    def _args(self) -> list[str]:
        auth = ""
        if self.pushgateway.basic_auth:
            user, password = next(iter(self.pushgateway.basic_auth.items()))
            auth = f"    basic_auth: {{username: {json.dumps(user)}, password: {json.dumps(password)}}}\n"
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: pushgateway\n"
            # The pushed job/instance are the containers'; without honor_labels Prometheus would
            # rename them exported_job/exported_instance and every container would look alike.
            "    honor_labels: true\n"
            # Created timestamps travel only in protobuf: scrape it first, text as a fallback.
            f"    scrape_protocols: {json.dumps(list(prometheus_stack.PUSHGATEWAY_SCRAPE_PROTOCOLS))}\n"
            f"    static_configs: [{{targets: {json.dumps([p.address for p in self.pushgateways])}}}]\n" + auth
        )
        return [
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
            *prometheus_stack.PROMETHEUS_FLAGS,
        ]

    def start(self) -> Prometheus:
        super().start()
        # Ready is not scraping: target discovery hands over targets only every 5 s, so wait for
        # the first scrape or a test's first seconds of pushes would never be seen.
        _wait(
            lambda: self.value('count(up{job="pushgateway"} == 1)') == len(self.pushgateways),
            30,
            "the first scrape of every Pushgateway",
            0.2,
        )
        return self

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: the vector as (labels, value) pairs (a scalar as one pair)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self.get("/api/v1/query?" + urllib.parse.urlencode(params))
        if body is None:
            raise RuntimeError(f"Prometheus query failed: {expr}")
        data = json.loads(body)["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of ``expr`` (None when the vector is empty)."""
        result = self.query(expr, at)
        if not result:
            return None
        if len(result) != 1:
            raise ValueError(f"{expr} returned {len(result)} series")
        return result[0][1]

    def wait_for_value(self, expr: str, expected: float | None, timeout: float = 20.0) -> float | None:
        """Wait until ``expr`` equals ``expected`` (None: empty); returns the last value seen."""
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.value(expr))
            return seen[-1] == expected

        try:
            _wait(check, timeout, f"{expr} == {expected}", interval=0.25)
        except TimeoutError:
            raise AssertionError(f"{expr}: expected {expected}, last seen {seen[-1] if seen else 'nothing'}") from None
        return expected


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a hung Pushgateway."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)  # held open, never read, never answered

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


# ---------------------------------------------------------------------------- synthetic containers

_CONTAINER_MAIN = """
from support.promstack import _container_main
_container_main()
"""
# Answers are marked: the service's own logger writes JSON lines to stdout as well.
_ANSWER = "@promstack-answer "


class SyntheticContainer:
    """A warm Lambda container stand-in: one Python process, its own registry, invoked in turn.

    Each invocation runs a score-like handler wrapped in ``pushes_metrics`` (so it pushes to
    ``PUSHGATEWAY_URL`` at its end) and records one ``POST /score 200`` request, one /score
    latency, one model prediction for the given property and the models-loaded gauge. The
    process is frozen between calls, as Lambda freezes a container between invocations.

    ``env`` adds to the process environment (``PUSHGATEWAY_URL``, timeouts, credentials, ...).
    """

    def __init__(self, env: Mapping[str, str], function: str = "score") -> None:
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["AWS_LAMBDA_FUNCTION_NAME"] = full_env.get("AWS_LAMBDA_FUNCTION_NAME", f"pricing-{function}")
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT / "tests")])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CONTAINER_MAIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self.log: list[str] = []  # what the container logged (stdout and stderr)
        self.instance = self._call({"op": "hello"})["instance"]
        self.invocations = 0

    def _call(self, message: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"container exited with {self.proc.wait(5)}")
            if line.startswith(_ANSWER):
                return json.loads(line[len(_ANSWER) :])
            self.log.append(line)  # the container's log lines, for assertions

    def invoke(self, properties: Iterable[str] = ("prop-1",), pause: float = 0.0) -> list[float]:
        """One invocation per property, ``pause`` seconds apart; each one's wall time in seconds."""
        props = list(properties)
        answer = self._call({"op": "invoke", "properties": props, "pause": pause})
        self.invocations += len(props)
        return answer["elapsed"]

    def stats(self) -> dict:
        """The container's view: its push failures by reason and last push size."""
        return self._call({"op": "stats"})

    def close(self) -> None:
        """Retire the container: the process exits and never pushes again."""
        if self.proc.poll() is None:
            try:
                self._call({"op": "exit"})
            except (RuntimeError, BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> SyntheticContainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _container_main() -> None:
    """The process side of ``SyntheticContainer``: JSON requests on stdin, answers on stdout."""
    from pricing.observability import metrics, push
    from pricing.settings import Settings

    settings = Settings.from_env()  # this process is a container: its own composition root
    metrics.METRICS.cap_property_labels(settings.metrics_max_property_labels)

    @push.pushes_metrics(settings=settings)
    def handler(event, context):
        metrics.track_model_prediction(property_id=event["property_id"], model_type="conversion", duration=0.002)
        metrics.track_score_request(pricing_method="ml_elasticity", duration=0.012)
        metrics.set_models_loaded(1)
        metrics.track_request(method="POST", endpoint="/score", status_code=200, duration=0.012)
        return {"statusCode": 200, "body": "{}"}

    for line in sys.stdin:
        message = json.loads(line)
        op = message["op"]
        if op == "hello":
            answer: dict = {"instance": push.container_instance()}
        elif op == "invoke":
            elapsed = []
            for i, prop in enumerate(message["properties"]):
                if i and message["pause"]:
                    time.sleep(message["pause"])
                start = time.perf_counter()
                handler({"property_id": prop, "requestContext": {"requestId": f"req-{prop}-{i}"}}, None)
                elapsed.append(time.perf_counter() - start)
            answer = {"elapsed": elapsed}
        elif op == "stats":
            answer = {
                "push_failures": {
                    reason: metrics.METRICS.get_sample_value("pricing_metrics_push_failures_total", {"reason": reason})
                    for reason in metrics.PUSH_FAILURE_REASONS
                },
                "last_push": push.last_push_stats(),
            }
        else:
            print(_ANSWER + json.dumps({"bye": True}), flush=True)
            return
        print(_ANSWER + json.dumps(answer), flush=True)
