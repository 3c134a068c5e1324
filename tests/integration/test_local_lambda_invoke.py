"""``python -m local.invoke`` (``make invoke``) on a small built application of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from local.stack import running_state
from support.local_stack import PROJECT_ROOT, moto_resources
from support.stub_http import Reply, StubServer

TEMPLATE = """
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Stage: {Type: String, Default: test}
    Globals:
      Function:
        Timeout: 5
        Environment:
          Variables:
            TABLE: !Ref Table
            STAGE: !Ref Stage
    Resources:
      ProbeFunction:
        Type: AWS::Serverless::Function
        Properties:
          FunctionName: !Sub probe-${Stage}
          Handler: probe.handler
          Runtime: python3.11
          CodeUri: ProbeFunction
      Table:
        Type: AWS::DynamoDB::Table
        Properties:
          TableName: !Sub probe-table-${Stage}
          BillingMode: PAY_PER_REQUEST
          AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
          KeySchema: [{AttributeName: id, KeyType: HASH}]
"""

HANDLER = """
    import os
    import boto3

    print("a log line that must not reach stdout")

    def handler(event, context):
        print("handling", event)
        if event.get("fail"):
            raise KeyError("missing")
        tables = boto3.client("dynamodb").list_tables()["TableNames"] if event.get("tables") else None
        return {"event": event, "endpoint": os.environ.get("AWS_ENDPOINT_URL"), "tables": tables,
                "table": os.environ["TABLE"], "stage": os.environ["STAGE"], "extra": os.environ.get("EXTRA")}
"""


@pytest.fixture
def app(tmp_path):
    build = tmp_path / "build"
    (build / "ProbeFunction").mkdir(parents=True)
    (build / "template.yaml").write_text(textwrap.dedent(TEMPLATE))
    (build / "ProbeFunction" / "probe.py").write_text(textwrap.dedent(HANDLER))
    return tmp_path


def run_invoke(app, *args, stdin=None, env=None):
    clean = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN")}
    clean.update({"LOCAL_BUILD_DIR": str(app / "build"), "LOCAL_RUN_DIR": str(app / "run"), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "local.invoke", *args], cwd=PROJECT_ROOT, env=clean, input=stdin, capture_output=True, text=True, timeout=120
    )


def write(path, document):
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.services
def test_prints_only_the_result_on_stdout_with_a_moto_server_of_its_own(app):
    done = run_invoke(app, "ProbeFunction", write(app / "event.json", {"tables": True}))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON document
    assert result["event"] == {"tables": True}
    assert result["endpoint"].startswith("http://127.0.0.1:")
    assert result["tables"] == ["probe-table-test"] == [result["table"]]
    assert "a log line that must not reach stdout" in done.stderr and "handling" in done.stderr
    assert "REPORT RequestId" in done.stderr


def test_given_endpoint_in_env_vars_is_used_as_is(app):
    env_vars = write(app / "env.json", {"Parameters": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "ProbeFunction": {"EXTRA": "from-file"}})
    done = run_invoke(app, "ProbeFunction", write(app / "event.json", {}), "--env-vars", env_vars)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["endpoint"] == "http://127.0.0.1:9" and result["extra"] == "from-file"
    assert "moto server" not in done.stderr


def test_function_name_event_from_stdin_and_failures(app):
    given = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    by_name = run_invoke(app, "probe-test", "-", stdin='{"via": "stdin"}', env=given)
    assert by_name.returncode == 0 and json.loads(by_name.stdout)["event"] == {"via": "stdin"}
    failed = run_invoke(app, "ProbeFunction", "-", stdin='{"fail": true}', env=given)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errorType"] == "KeyError"
    unknown = run_invoke(app, "NoSuchFunction", env=given)
    assert unknown.returncode == 2 and unknown.stdout == "" and "ProbeFunction" in unknown.stderr


@pytest.mark.services
def test_uses_the_services_of_a_running_make_run(app):
    # Every path of make run's API invokes a function (GET / too), and a cold start there takes
    # seconds on a busy machine: an API this slow to answer must still count as up.
    with StubServer(Reply(404, delay=3.0)) as fake_api, moto_resources() as aws:
        (app / "run").mkdir()
        write(
            app / "run" / "state.json",
            {
                "pid": os.getpid(),
                "api_url": fake_api.url,
                "aws_endpoint_url": aws.endpoint_url,
                "function_env": {"AWS_ENDPOINT_URL": aws.endpoint_url, "EXTRA": "from-make-run"},
            },
        )
        done = run_invoke(app, "ProbeFunction", write(app / "event.json", {}))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["endpoint"] == aws.endpoint_url and result["extra"] == "from-make-run"
    assert "using the services of make run" in done.stderr
    assert fake_api.requests == []  # connected to, never asked: no function was invoked to find it


def test_a_make_run_whose_aws_endpoint_is_gone_is_not_used(tmp_path):
    with StubServer(Reply(404)) as fake_api, StubServer(Reply(200)) as endpoint:
        state = {"pid": os.getpid(), "api_url": fake_api.url, "aws_endpoint_url": endpoint.url}
        write(tmp_path / "state.json", state)
        assert running_state(tmp_path / "state.json") == state
    assert running_state(tmp_path / "state.json") is None  # both stopped
    with StubServer(Reply(404)) as fake_api:
        write(tmp_path / "state.json", {**state, "api_url": fake_api.url})
        assert running_state(tmp_path / "state.json") is None  # the API listens, the endpoint is gone


@pytest.mark.parametrize(
    "args, why",
    [
        ([], "usage"),
        (["FN=ScoreFunction"], "usage"),
        (["EVENT=events/score.json"], "usage"),
        (["FN=NoSuchFunction", "EVENT=events/score.json"], "no function NoSuchFunction"),
        (["FN=ScoreFunction", "EVENT=events/no-such-event.json"], "no event file"),
        (["FN=ScoreFunction", "EVENT=events/score.json", "ENV_VARS=no-such-env.json"], "no env vars file"),
    ],
)
def test_make_invoke_refuses_bad_arguments_with_the_usage_line_before_building(args, why):
    done = subprocess.run(["make", "--no-print-directory", "invoke", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert why in done.stderr
    assert "usage: make invoke FN=<ScoreFunction|IngestFunction|RetrainFunction> EVENT=" in done.stderr
    assert "sam build" not in done.stderr and done.stdout == ""
