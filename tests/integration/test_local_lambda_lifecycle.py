"""How local Lambda containers end: the shared layer's extension, SIGTERM, SHUTDOWN, SIGKILL.

Lambda sends SIGTERM to the runtime before it shuts an execution environment down only when an
extension is registered; the shared layer ships one (``layers/shared/extensions/pricing-shutdown``)
for that alone. These tests run it, with real ``awslambdaric`` runtimes and tiny handlers of their
own, through the Runtime API emulator: registration and SHUTDOWN, SIGTERM then SIGKILL after the
budget, retirement of idle containers (never of a busy one), and ``make invoke``'s container.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from local.container import ContainerError, LambdaContainer
from local.pool import FunctionPool
from local.runtime_api import RuntimeApi
from support.local_stack import PROJECT_ROOT, handler_function

SHARED_LAYER = PROJECT_ROOT / "layers" / "shared"
EXTENSION = SHARED_LAYER / "extensions" / "pricing-shutdown"

# A runtime that flushes at SIGTERM. Python 3.11's runtime client waits for its next event inside
# a C call, where a Python-level signal handler cannot run (Lambda's python3.11 runtime does the
# same); the signal's wakeup fd is written at once, though, so a thread can act on it.
FLUSH_AT_SIGTERM = """
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.set_wakeup_fd(write_end)

    def on_sigterm():
        os.read(read_end, 1)
        time.sleep(0.05)  # "flushing"
        Path(os.environ["MARKS"], f"sigterm-{os.getpid()}").write_text("flushed")
        print("flushed at SIGTERM", flush=True)
        os._exit(0)

    threading.Thread(target=on_sigterm, daemon=True).start()

    def handler(event, context):
        time.sleep(event.get("sleep", 0))
        return {"pid": os.getpid()}
"""

IGNORES_SIGTERM = """
    import os
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def handler(event, context):
        return {"pid": os.getpid()}
"""

# The handler a Python programmer writes first; see the test that uses it.
PLAIN_SIGNAL_HANDLER = """
    import os
    import signal
    from pathlib import Path

    def on_sigterm(signum, frame):
        Path(os.environ["MARKS"], "plain-handler-ran").write_text("yes")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)

    def handler(event, context):
        return {"pid": os.getpid()}
"""


def function_with(tmp_path: Path, source: str, *, layers=(SHARED_LAYER,), timeout: float = 10.0):
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    function = handler_function(tmp_path, source, timeout=timeout, environment={"MARKS": str(marks)})
    return type(function)(**{**function.__dict__, "layer_dirs": tuple(layers)}), marks


def container_of(function, tmp_path: Path, **kwargs) -> LambdaContainer:
    return LambdaContainer(function, log_dir=tmp_path / "logs", **kwargs)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie not yet reaped by its parent still answers kill(0).
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


# --- the extension and the Extensions API ---------------------------------------------------


def test_the_shared_layer_ships_the_extension_executable_and_small():
    assert EXTENSION.is_file() and os.access(EXTENSION, os.X_OK)
    assert EXTENSION.stat().st_size < 4096
    mode = subprocess.run(
        ["git", "ls-files", "-s", str(EXTENSION.relative_to(PROJECT_ROOT))], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.split()
    assert not mode or mode[0] == "100755"  # committed executable (when committed at all)


def test_extension_registers_before_the_runtime_starts_and_exits_on_shutdown(tmp_path):
    function, _ = function_with(tmp_path, "import os\n\ndef handler(e, c):\n    return {'pid': os.getpid()}\n")
    container = container_of(function, tmp_path)
    try:
        container.start()
        ((name, pid),) = container.extensions.items()
        assert name == "pricing-shutdown"
        result = container.invoke({})
        assert result.ok and result.cold_start
        assert not pid_gone(pid)  # it waits for its event through the invocations
    finally:
        container.stop()
    report = container.shutdown_report
    assert report.reason == "spindown" and report.sigterm
    assert report.extensions == {"pricing-shutdown": 0}  # exits 0 only once it got its SHUTDOWN
    assert report.duration_ms < report.budget_ms
    log = container.log_path.read_text()
    assert "EXTENSION\tName: pricing-shutdown\tState: Ready\tEvents: [SHUTDOWN]" in log
    assert log.index("EXTENSION\tName") < log.index("START RequestId")
    assert "SHUTDOWN Reason: spindown\tBudget: 500 ms" in log
    assert "Extension pricing-shutdown: exited with status 0" in log


def test_extension_starts_fast():
    """It runs before the runtime's init on every cold start: it must cost milliseconds."""
    timings = []
    for _ in range(5):
        api = RuntimeApi("arn:aws:lambda:us-east-1:123456789012:function:probe").start()
        try:
            # The interpreter a container finds first on its PATH (a pyenv shim would cost 100 ms).
            env = {
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                "PYTHONPATH": str(SHARED_LAYER / "no-such-dir"),
            }
            started = time.monotonic()
            process = subprocess.Popen([str(EXTENSION)], env=env)
            assert wait_for(lambda api=api: api.extensions and api.extensions[0].ready.is_set(), 10)
            timings.append(time.monotonic() - started)
            api.shutdown("spindown", int(time.time() * 1000) + 500)
            assert process.wait(timeout=5) == 0
        finally:
            api.close()
    assert api.extensions[0].name == "pricing-shutdown" and api.extensions[0].events == ("SHUTDOWN",)
    assert api.extensions[0].shutdown_sent
    assert sorted(timings)[2] < 0.1, timings  # about 10 ms here


def test_extensions_api_register_next_and_shutdown():
    api = RuntimeApi("arn:aws:lambda:us-east-1:123456789012:function:probe", handler="app.handler").start()
    try:
        conn = http.client.HTTPConnection(api.address, timeout=5)
        conn.request("POST", "/2020-01-01/extension/register", b'{"events": ["SHUTDOWN"]}')
        refused = conn.getresponse()
        assert refused.status == 400  # no Lambda-Extension-Name
        refused.read()
        conn.request("POST", "/2020-01-01/extension/register", b'{"events": ["SHUTDOWN"]}', {"Lambda-Extension-Name": "probe-extension"})
        registered = conn.getresponse()
        assert registered.status == 200
        assert json.loads(registered.read()) == {"functionName": "probe", "functionVersion": "$LATEST", "handler": "app.handler"}
        identifier = registered.getheader("Lambda-Extension-Identifier")
        assert identifier
        conn.request("GET", "/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": "nope"})
        unknown = conn.getresponse()
        assert unknown.status == 403
        unknown.read()

        # event/next blocks until the container shuts down.
        poll = http.client.HTTPConnection(api.address, timeout=0.3)
        poll.request("GET", "/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": identifier})
        with pytest.raises((socket.timeout, TimeoutError)):
            poll.getresponse()
        poll.close()
        runtime = http.client.HTTPConnection(api.address, timeout=0.5)
        runtime.request("GET", "/2018-06-01/runtime/invocation/next")
        deadline_ms = int(time.time() * 1000) + 500
        api.shutdown("spindown", deadline_ms)
        conn.request("GET", "/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": identifier})
        event = conn.getresponse()
        assert event.status == 200 and event.getheader("Lambda-Extension-Event-Identifier")
        assert json.loads(event.read()) == {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms}
        # Meanwhile the runtime's own poll stays unanswered, as in Lambda.
        with pytest.raises((socket.timeout, TimeoutError)):
            runtime.getresponse()
    finally:
        api.close()


def test_extension_that_exits_before_registering_fails_the_init(tmp_path):
    layer = tmp_path / "layer"
    (layer / "extensions").mkdir(parents=True)
    broken = layer / "extensions" / "broken"
    broken.write_text("#!/bin/sh\necho going away >&2\nexit 3\n")
    broken.chmod(0o755)
    function, _ = function_with(tmp_path, IGNORES_SIGTERM, layers=(SHARED_LAYER, layer))
    container = container_of(function, tmp_path)
    try:
        result = container.invoke({})
    finally:
        container.stop()
    assert result.outcome == "init_error" and result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Extension.Crash"
    assert "broken exited with status 3" in result.json()["errorMessage"]
    assert container.pid is None  # the runtime never started
    assert not container.alive


# --- SIGTERM, the budget, SIGKILL -----------------------------------------------------------


def test_retired_runtime_gets_sigterm_and_flushes_within_the_budget(tmp_path):
    function, marks = function_with(tmp_path, FLUSH_AT_SIGTERM)
    container = container_of(function, tmp_path)
    try:
        pid = container.invoke({}).json()["pid"]
        assert not (marks / f"sigterm-{pid}").exists()
    finally:
        report = container.retire()
        container.stop()
    assert (marks / f"sigterm-{pid}").read_text() == "flushed"
    assert report.sigterm and not report.killed and report.runtime_status == 0
    assert report.duration_ms < report.budget_ms
    log = container.log_path.read_text()
    assert "flushed at SIGTERM" in log  # its last words reach the log
    assert "Runtime: exited with status 0 (after SIGTERM)" in log


def test_runtime_ignoring_sigterm_is_killed_after_the_budget(tmp_path):
    function, _ = function_with(tmp_path, IGNORES_SIGTERM)
    container = container_of(function, tmp_path, shutdown_budget_ms=300)
    pid = container.invoke({}).json()["pid"]
    started = time.monotonic()
    report = container.retire()
    took = time.monotonic() - started
    container.stop()
    assert report.sigterm and report.killed and report.runtime_status == -9
    assert 0.3 <= took < 1.5 and report.budget_ms == 300
    assert pid_gone(pid)
    assert "SIGTERM, then SIGKILL after the budget" in container.log_path.read_text()


def test_plain_python_signal_handler_does_not_run_while_the_runtime_waits_for_its_next_event(tmp_path):
    """What Lambda's python3.11 runtime does too: the runtime client blocks in a C call for its
    next event, so a handler set with ``signal.signal`` alone never runs before the SIGKILL (the
    emulator must not answer that poll at shutdown, or it would run here and not in Lambda)."""
    function, marks = function_with(tmp_path, PLAIN_SIGNAL_HANDLER)
    container = container_of(function, tmp_path, shutdown_budget_ms=300)
    container.invoke({})
    # Idle as Lambda retires it: the runtime is waiting for its next event (not still posting
    # the last answer, when a plain handler could still run).
    assert wait_for(lambda: container._api.polls >= 1, 10)
    report = container.retire()
    container.stop()
    assert report.sigterm and report.killed
    assert not (marks / "plain-handler-ran").exists()


def test_without_an_extension_the_runtime_is_killed_without_sigterm(tmp_path):
    function, marks = function_with(tmp_path, FLUSH_AT_SIGTERM, layers=())
    container = container_of(function, tmp_path)
    pid = container.invoke({}).json()["pid"]
    report = container.retire()
    container.stop()
    assert not report.sigterm and report.runtime_status == -9 and report.extensions == {}
    assert not (marks / f"sigterm-{pid}").exists()
    assert "SIGKILL, no extension registered" in container.log_path.read_text()


def test_retirement_waits_for_a_running_invocation_and_then_refuses_new_ones(tmp_path):
    function, marks = function_with(tmp_path, FLUSH_AT_SIGTERM)
    container = container_of(function, tmp_path)
    container.invoke({})
    with ThreadPoolExecutor(1) as executor:
        running = executor.submit(container.invoke, {"sleep": 1.0})
        assert wait_for(lambda: container._busy.locked(), 5)
        time.sleep(0.2)  # inside the handler by now
        retire_started = time.monotonic()
        report = container.retire(drain=10)
        result = running.result(timeout=10)
    assert result.ok, result.payload  # not interrupted
    assert time.monotonic() - retire_started >= 0.5
    assert report.runtime_status == 0 and (marks / f"sigterm-{result.json()['pid']}").exists()
    with pytest.raises(ContainerError):
        container.invoke({})
    container.stop()


# --- the pool: idle containers are retired, busy ones never -------------------------------------


def test_idle_container_is_retired_and_the_next_invocation_gets_a_cold_one(tmp_path):
    function, marks = function_with(tmp_path, FLUSH_AT_SIGTERM)
    pool = FunctionPool(function, idle_seconds=0.5, log_dir=tmp_path / "logs")
    try:
        first = pool.invoke({})
        assert pool.size == 1 and pool.retired_containers == 0
        assert wait_for(lambda: pool.retired_containers == 1, 10)
        assert pool.size == 0
        assert (marks / f"sigterm-{first.json()['pid']}").read_text() == "flushed"
        second = pool.invoke({})
    finally:
        pool.close()
    assert second.ok and second.cold_start
    assert second.container_id != first.container_id and second.json()["pid"] != first.json()["pid"]


def test_busy_container_is_not_retired_mid_invocation(tmp_path):
    function, marks = function_with(tmp_path, FLUSH_AT_SIGTERM)
    pool = FunctionPool(function, idle_seconds=0.3, log_dir=tmp_path / "logs")
    try:
        warm = pool.invoke({})
        busy = pool.invoke({"sleep": 1.5})  # several idle periods long, the reaper runs meanwhile
        assert busy.ok and not busy.cold_start and busy.container_id == warm.container_id
        assert pool.retired_containers == 0
        assert not (marks / f"sigterm-{busy.json()['pid']}").exists()
        assert wait_for(lambda: pool.retired_containers == 1, 10)  # once idle, it goes
    finally:
        pool.close()


def test_closing_the_pool_retires_every_container_at_once(tmp_path):
    room = tmp_path / "room"
    room.mkdir()
    source = IGNORES_SIGTERM.replace(
        "    def handler(event, context):\n        return",
        "    def handler(event, context):\n        import time\n"
        "        from pathlib import Path\n"
        "        Path(event['room'], context.aws_request_id).touch()\n"
        "        while len(list(Path(event['room']).iterdir())) < 3:\n"
        "            time.sleep(0.01)\n        return",
    )
    function, _ = function_with(tmp_path, source)
    pool = FunctionPool(function, max_containers=3, log_dir=tmp_path / "logs", shutdown_budget_ms=400)
    with ThreadPoolExecutor(3) as executor:
        results = list(executor.map(lambda _: pool.invoke({"room": str(room)}), range(3)))
    assert len({r.container_id for r in results}) == 3
    containers = pool.containers()
    started = time.monotonic()
    pool.close()
    took = time.monotonic() - started
    assert all(c.shutdown_report.killed for c in containers)  # each took its whole budget...
    assert took < 1.1  # ...side by side, not one after the other


# --- make invoke --------------------------------------------------------------------------------

INVOKE_TEMPLATE = """
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Shared:
        Type: AWS::Serverless::LayerVersion
        Properties:
          ContentUri: layers/shared/
      ProbeFunction:
        Type: AWS::Serverless::Function
        Properties:
          FunctionName: probe
          Handler: app.handler
          Runtime: python3.11
          CodeUri: ProbeFunction
          Timeout: 5
          Layers: [!Ref Shared]
"""


@pytest.mark.services
def test_make_invoke_prints_only_the_result_and_retires_its_container(tmp_path):
    build = tmp_path / "build"
    (build / "Shared" / "extensions").mkdir(parents=True)
    shutil.copy2(EXTENSION, build / "Shared" / "extensions" / EXTENSION.name)
    handler_function(build, FLUSH_AT_SIGTERM, name="ProbeFunction")
    (build / "template.yaml").write_text(textwrap.dedent(INVOKE_TEMPLATE))
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "env.json").write_text(json.dumps({"ProbeFunction": {"MARKS": str(marks)}}))
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN")}
    env.update({"LOCAL_BUILD_DIR": str(build), "LOCAL_RUN_DIR": str(tmp_path / "run")})
    done = subprocess.run(
        [sys.executable, "-m", "local.invoke", "ProbeFunction", "-", "--env-vars", str(tmp_path / "env.json")],
        cwd=PROJECT_ROOT,
        env=env,
        input='{"hello": 1}',
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["pid"]  # stdout is exactly the result
    assert (marks / f"sigterm-{pid}").read_text() == "flushed"  # before the command returned
    assert "EXTENSION\tName: pricing-shutdown" in done.stderr
    assert "SHUTDOWN Reason: spindown" in done.stderr and "flushed at SIGTERM" in done.stderr
