"""The local Lambda runner: real awslambdaric processes against the Runtime API emulator.

Each test writes a tiny handler of its own, so what is tested is the runner -- results, errors,
warm reuse, the Lambda environment, timeouts, scaling -- not the service's code.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from local.container import LambdaContainer
from local.pool import FunctionPool, Throttled
from local.runtime_api import Invocation, RuntimeApi
from support.local_stack import handler_function, lambda_containers

STATEFUL = """
    import os
    import time

    INVOCATIONS = 0
    print("init in", os.getpid(), flush=True)

    def handler(event, context):
        global INVOCATIONS
        INVOCATIONS += 1
        print("handling", event, flush=True)
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("fail"):
            raise ValueError("the event asked to fail")
        return {"invocations": INVOCATIONS, "pid": os.getpid(), "echo": event}
"""


def test_runner_returns_the_handler_result(tmp_path):
    function = handler_function(tmp_path, STATEFUL)
    with lambda_containers(function) as containers:
        result = containers.invoke({"hello": "world", "n": [1, 2.5, None]})
    assert result.ok and result.outcome == "response"
    assert result.json()["echo"] == {"hello": "world", "n": [1, 2.5, None]}
    assert result.cold_start and result.init_ms is not None


def test_warm_container_keeps_module_state_between_invocations(tmp_path):
    function = handler_function(tmp_path, STATEFUL)
    with lambda_containers(function) as containers:
        first, second, third = (containers.invoke({"i": i}) for i in range(3))
    assert [r.json()["invocations"] for r in (first, second, third)] == [1, 2, 3]
    assert len({r.json()["pid"] for r in (first, second, third)}) == 1
    assert first.cold_start and not second.cold_start and not third.cold_start


def test_handler_exception_is_an_unhandled_function_error_and_the_container_stays_warm(tmp_path):
    function = handler_function(tmp_path, STATEFUL)
    with lambda_containers(function) as containers:
        failed = containers.invoke({"fail": True})
        after = containers.invoke({})
    assert failed.function_error == "Unhandled" and failed.outcome == "error"
    error = failed.json()
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "the event asked to fail"
    assert error["requestId"] == failed.request_id
    assert after.ok and after.json()["invocations"] == 2


def test_timeout_kills_the_container_and_reports_it(tmp_path):
    function = handler_function(tmp_path, STATEFUL, timeout=1)
    with lambda_containers(function) as containers:
        container = containers.containers[0]
        containers.invoke({})  # warm: the timeout clock must cover the handler, not the import
        pid = container.pid
        result = containers.invoke({"sleep": 60})
        assert not container.alive
    assert result.outcome == "timeout" and result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds",
    }
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_import_failure_is_reported_as_an_init_error(tmp_path):
    function = handler_function(tmp_path, "import module_that_is_not_there\n\ndef handler(e, c):\n    return 1\n")
    with lambda_containers(function) as containers:
        result = containers.invoke({})
    assert result.outcome == "init_error" and result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Runtime.ImportModuleError"
    assert "module_that_is_not_there" in result.json()["errorMessage"]


def test_crash_of_the_runtime_process_is_an_exit_error(tmp_path):
    function = handler_function(tmp_path, "import os\n\ndef handler(e, c):\n    os._exit(3)\n")
    with lambda_containers(function) as containers:
        result = containers.invoke({})
    assert result.outcome == "exit"
    assert result.json()["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in result.json()["errorMessage"]


ENVIRONMENT_PROBE = """
    import os

    NAMES = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
             "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION", "AWS_DEFAULT_REGION",
             "LAMBDA_TASK_ROOT", "_HANDLER", "AWS_EXECUTION_ENV", "AWS_ACCESS_KEY_ID", "FROM_TEMPLATE",
             "OVERRIDDEN", "HOME_OF_THE_RUNNER"]

    def handler(event, context):
        return {
            "env": {name: os.environ.get(name) for name in NAMES},
            "cwd": os.getcwd(),
            "context": {
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "log_stream_name": context.log_stream_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "aws_request_id": context.aws_request_id,
            },
        }
"""


def test_containers_get_the_lambda_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME_OF_THE_RUNNER", "must not leak into the container")
    function = handler_function(
        tmp_path,
        ENVIRONMENT_PROBE,
        name="pricing-probe-dev",
        timeout=7,
        memory_mb=1024,
        environment={"FROM_TEMPLATE": "t", "OVERRIDDEN": "template"},
    )
    with lambda_containers(function, 2, env={"OVERRIDDEN": "override"}) as containers:
        one, two = containers.invoke({}, 0), containers.invoke({}, 1)
    env, context = one.json()["env"], one.json()["context"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "pricing-probe-dev" == context["function_name"]
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1024" and context["memory_limit_in_mb"] == "1024"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/pricing-probe-dev"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["LAMBDA_TASK_ROOT"] == str(function.code_dir) == one.json()["cwd"]
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["AWS_ACCESS_KEY_ID"]  # dummy credentials: boto3 never looks for real ones
    assert env["FROM_TEMPLATE"] == "t" and env["OVERRIDDEN"] == "override"
    assert env["HOME_OF_THE_RUNNER"] is None
    assert context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:pricing-probe-dev"
    assert 0 < context["remaining_ms"] <= 7000
    assert context["aws_request_id"] == one.request_id
    # Each container is its own execution environment with its own log stream.
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == context["log_stream_name"]
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] != two.json()["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert "[$LATEST]" in env["AWS_LAMBDA_LOG_STREAM_NAME"]


IMPORT_PROBE = """
    import importlib.util

    def handler(event, context):
        return {name: importlib.util.find_spec(name) is not None for name in event["modules"]}
"""


def test_only_the_runtime_packages_are_importable_besides_the_function_and_its_layers(tmp_path):
    """A dependency missing from the layer must fail locally as it would in AWS."""
    layer = tmp_path / "layer"
    (layer / "python" / "layer_package").mkdir(parents=True)
    (layer / "python" / "layer_package" / "__init__.py").write_text("")
    function = handler_function(tmp_path, IMPORT_PROBE)
    function = type(function)(**{**function.__dict__, "layer_dirs": (layer,)})
    event = {"modules": ["boto3", "botocore", "awslambdaric", "layer_package", "fastapi", "pytest", "moto"]}
    with lambda_containers(function) as containers:
        lambda_like = containers.invoke(event).json()
    with lambda_containers(function, runtime_packages="venv") as containers:
        venv_like = containers.invoke(event).json()
    assert lambda_like == {
        "boto3": True,
        "botocore": True,
        "awslambdaric": True,
        "layer_package": True,
        "fastapi": False,
        "pytest": False,
        "moto": False,
    }
    assert venv_like["fastapi"] and venv_like["layer_package"]


def test_container_log_holds_the_output_and_lambda_report_lines(tmp_path):
    function = handler_function(tmp_path, STATEFUL)
    with lambda_containers(function, log_dir=tmp_path / "logs") as containers:
        result = containers.invoke({"marker": "find-me"})
        log_path = containers.containers[0].log_path
    text = log_path.read_text()
    assert log_path.name == f"probe-{result.container_id}.log"
    assert "init in" in text and "find-me" in text
    assert f"START RequestId: {result.request_id} Version: $LATEST" in text
    assert f"END RequestId: {result.request_id}" in text
    assert f"REPORT RequestId: {result.request_id}" in text and "Init Duration" in text


# --- the pool -------------------------------------------------------------------------------

RENDEZVOUS = """
    import os
    import time
    from pathlib import Path

    def handler(event, context):
        # Wait until `expected` invocations are inside a handler at the same time: only
        # possible when each runs in its own container.
        room = Path(event["room"])
        (room / context.aws_request_id).touch()
        deadline = time.monotonic() + 20
        while len(list(room.iterdir())) < event["expected"] and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"pid": os.getpid(), "met": len(list(room.iterdir())) >= event["expected"]}
"""


def test_concurrent_invocations_spread_over_new_containers(tmp_path):
    room = tmp_path / "room"
    room.mkdir()
    function = handler_function(tmp_path, RENDEZVOUS, timeout=30)
    pool = FunctionPool(function, max_containers=4, log_dir=tmp_path)
    try:
        with ThreadPoolExecutor(4) as executor:
            results = list(executor.map(lambda _: pool.invoke({"room": str(room), "expected": 4}), range(4)))
        assert all(r.ok and r.json()["met"] for r in results)
        assert len({r.container_id for r in results}) == 4
        assert len({r.json()["pid"] for r in results}) == 4
        assert pool.size == 4 and all(r.cold_start for r in results)
        # Once they are idle, the next invocation reuses a warm one instead of starting a fifth.
        again = pool.invoke({"room": str(room), "expected": 1})
        assert not again.cold_start and pool.started_containers == 4
    finally:
        pool.close()


def test_pool_replaces_a_container_that_timed_out(tmp_path):
    function = handler_function(tmp_path, STATEFUL, timeout=1)
    pool = FunctionPool(function, max_containers=2, log_dir=tmp_path)
    try:
        first = pool.invoke({})
        timed_out = pool.invoke({"sleep": 60})
        after = pool.invoke({})
    finally:
        pool.close()
    assert timed_out.outcome == "timeout" and timed_out.container_id == first.container_id
    assert after.ok and after.cold_start and after.container_id != first.container_id
    assert after.json()["invocations"] == 1


BLOCKING = """
    import time
    from pathlib import Path

    def handler(event, context):
        release = Path(event["release"])
        deadline = time.monotonic() + 20
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"released": release.exists()}
"""


def test_pool_at_its_limit_waits_then_throttles(tmp_path):
    function = handler_function(tmp_path, BLOCKING, timeout=30)
    release = tmp_path / "release"
    pool = FunctionPool(function, max_containers=1, max_wait=0.3, log_dir=tmp_path)
    try:
        with ThreadPoolExecutor(1) as executor:
            busy = executor.submit(pool.invoke, {"release": str(release)})
            while pool.size == 0:  # the first invocation holds the only container
                threading.Event().wait(0.01)
            with pytest.raises(Throttled):
                pool.invoke({"release": str(release)})
            release.touch()
            assert busy.result(timeout=30).json() == {"released": True}
        assert pool.invoke({"release": str(release)}).ok  # free again: no throttling
    finally:
        pool.close()


# --- the Runtime API emulator itself ----------------------------------------------------------


def test_runtime_api_speaks_the_lambda_runtime_protocol():
    api = RuntimeApi("arn:aws:lambda:us-east-1:123456789012:function:probe").start()
    try:
        invocation = Invocation(payload=b'{"a": 1}', timeout=3)
        api.submit(invocation)
        conn = http.client.HTTPConnection(api.address, timeout=5)
        conn.request("GET", "/2018-06-01/runtime/invocation/next")
        response = conn.getresponse()
        assert response.status == 200 and response.version == 11
        assert response.getheader("Content-Length") == "8"
        assert json.loads(response.read()) == {"a": 1}
        assert response.getheader("Lambda-Runtime-Aws-Request-Id") == invocation.request_id
        assert response.getheader("Lambda-Runtime-Invoked-Function-Arn").endswith(":function:probe")
        assert int(response.getheader("Lambda-Runtime-Deadline-Ms")) > 0
        assert response.getheader("Lambda-Runtime-Trace-Id").startswith("Root=1-")
        # Same keep-alive connection, as the runtime client uses it.
        conn.request("POST", f"/2018-06-01/runtime/invocation/{invocation.request_id}/response", b'"done"')
        answer = conn.getresponse()
        assert answer.status == 202 and answer.getheader("Content-Length")
        answer.read()
        assert invocation.done.is_set() and invocation.outcome == "response" and invocation.result == b'"done"'
        conn.request("POST", "/2018-06-01/runtime/invocation/unknown-id/response", b"{}")
        unknown = conn.getresponse()
        assert unknown.status == 400
        unknown.read()
    finally:
        api.close()


def test_stopped_container_refuses_invocations(tmp_path):
    from local.container import ContainerError

    container = LambdaContainer(handler_function(tmp_path, STATEFUL), log_dir=Path(tmp_path))
    container.start()
    container.stop()
    with pytest.raises(ContainerError):
        container.invoke({})
