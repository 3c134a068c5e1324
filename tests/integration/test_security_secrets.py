"""Credentials from Secrets Manager (a moto server), resolved once per container.

The template passes only ARNs (``BACKEND_API_KEY_SECRET_ARN``, ``PUSHGATEWAY_CREDENTIALS_SECRET_ARN``);
each app module fetches the secrets as it builds its configuration, through
``pricing.storage.secrets.resolve_secrets``; reading the environment (``Settings.from_env``) never does.
The last test runs the built ScoreFunction in a local Lambda container and checks the fetched key
reaches the competitor backend and the fetched credentials open a secured Pushgateway.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from local.services import aws_client
from pricing.settings import Settings
from pricing.storage.secrets import resolve_secrets
from support.faults import CompetitorBackend, FaultProxy
from support.moto_stack import moto_server  # noqa: F401 - fixture

BACKEND_KEY = "bk-3f9a0c6e1d7b4c2a"
PUSH_USER, PUSH_PASSWORD = "pricing-pusher", "pw-8e2d1b7c5a"


@pytest.fixture
def secrets(moto_server, monkeypatch):  # noqa: F811
    """Secrets on the moto server; AWS calls go through a counting proxy in front of it."""
    client = aws_client("secretsmanager", moto_server.url)
    stamp = str(time.monotonic_ns())  # moto keeps deleted names for a while: fresh names per test

    def create(name: str, value: str) -> str:
        return client.create_secret(Name=f"{name}-{stamp}", SecretString=value)["ARN"]

    with FaultProxy(moto_server.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        create.proxy = proxy
        create.url = moto_server.url
        yield create


def fetches(proxy: FaultProxy) -> int:
    return sum(1 for service, target, _ in proxy.log if service == "secretsmanager" and target == "GetSecretValue")


def test_backend_key_and_pushgateway_credentials_come_from_their_secrets(secrets):
    settings = Settings(
        backend_api_key_secret_arn=secrets("backend-key", BACKEND_KEY),
        pushgateway_credentials_secret_arn=secrets("pushgateway", json.dumps({"username": PUSH_USER, "password": PUSH_PASSWORD})),
    )
    resolved = resolve_secrets(settings)
    assert resolved.backend_api_key == BACKEND_KEY
    assert (resolved.pushgateway_username, resolved.pushgateway_password) == (PUSH_USER, PUSH_PASSWORD)
    for secret in (BACKEND_KEY, PUSH_PASSWORD):
        assert secret not in repr(resolved)


def test_a_json_api_key_and_a_bearer_token_are_read_too(secrets):
    resolved = resolve_secrets(
        Settings(
            backend_api_key_secret_arn=secrets("backend-json", json.dumps({"api_key": BACKEND_KEY})),
            pushgateway_credentials_secret_arn=secrets("bearer", json.dumps({"bearer_token": "tok-51c0ffee"})),
        )
    )
    assert resolved.backend_api_key == BACKEND_KEY and resolved.pushgateway_bearer_token == "tok-51c0ffee"
    assert resolved.pushgateway_username == ""


def test_a_value_given_in_the_environment_wins_and_nothing_is_fetched(secrets):
    settings = Settings(
        backend_api_key="local-key",
        backend_api_key_secret_arn=secrets("unused", "x" * 12),
        pushgateway_username="me",
        pushgateway_credentials_secret_arn=secrets("unused-pg", "{}"),
    )
    assert resolve_secrets(settings) == settings
    assert fetches(secrets.proxy) == 0


@pytest.mark.parametrize("fault", ["missing", "error", "reset", "malformed"])
def test_a_secret_that_cannot_be_had_is_logged_by_arn_and_left_empty(secrets, caplog, fault):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf"
    pg_arn = secrets("pg-malformed", '["not", "credentials"]') if fault == "malformed" else arn
    if fault in ("error", "reset"):
        secrets.proxy.set("secretsmanager", fault)
    with caplog.at_level(logging.ERROR, logger="pricing.storage"):
        resolved = resolve_secrets(Settings(backend_api_key_secret_arn=arn, pushgateway_credentials_secret_arn=pg_arn))
    assert resolved.backend_api_key == "" and resolved.pushgateway_username == ""
    assert arn in caplog.text or pg_arn in caplog.text


def test_reading_the_environment_fetches_nothing_and_resolving_fetches_each_secret_once(secrets):
    env = {
        "BACKEND_API_KEY_SECRET_ARN": secrets("once", BACKEND_KEY),
        "PUSHGATEWAY_CREDENTIALS_SECRET_ARN": secrets("once-pg", json.dumps({"username": PUSH_USER, "password": PUSH_PASSWORD})),
    }
    from_env = Settings.from_env(env)
    assert from_env.backend_api_key == "" and fetches(secrets.proxy) == 0
    resolved = resolve_secrets(from_env)  # what an app module does, once, at import
    assert resolved.backend_api_key == BACKEND_KEY and resolved.pushgateway_password == PUSH_PASSWORD
    assert fetches(secrets.proxy) == 2


def test_the_built_function_uses_the_fetched_key_and_credentials(secrets, tmp_path):
    from local.apigw import build_event
    from local.template import ApiRoute
    from support.local_stack import lambda_containers
    from support.promstack import Pushgateway

    now = datetime.now(UTC)
    body = {
        "entity": {"userId": "u-1", "propertyId": "secured-1"},
        "stay_date": (now.date() + timedelta(days=10)).isoformat(),
        "quote_time": now.isoformat(),
        "inventory": {"capacity": 10, "remaining": 4},
    }
    event = build_event(
        method="POST",
        raw_path="/score",
        headers=[("Content-Type", "application/json")],
        body=json.dumps(body).encode(),
        route=ApiRoute("ScoreFunction", "POST", "/score"),
        path_parameters=None,
        stage="dev",
    )
    with CompetitorBackend("ok") as backend, Pushgateway(basic_auth={PUSH_USER: PUSH_PASSWORD}) as pgw:
        env = {
            "AWS_ENDPOINT_URL": secrets.url,
            "BACKEND_API_URL": backend.url,
            "BACKEND_API_KEY_SECRET_ARN": secrets("fn-backend", BACKEND_KEY),
            "PUSHGATEWAY_URL": pgw.url,
            "PUSHGATEWAY_CREDENTIALS_SECRET_ARN": secrets("fn-pg", json.dumps({"username": PUSH_USER, "password": PUSH_PASSWORD})),
        }
        with lambda_containers("ScoreFunction", env=env, log_dir=tmp_path) as containers:
            result = containers.invoke(event)
            assert result.ok, result.payload[:500]
            answer = json.loads(result.json()["body"])
            assert answer["safety"]["competitor_data"]["source"] == "scraper"
            assert backend.requests[0].header("X-API-Key") == BACKEND_KEY
            # The push is written at the end of the invocation and not waited for: poll for it.
            deadline = time.monotonic() + 10
            while pgw.sum("pricing_requests_total", endpoint="/score", status_code="200") != 1:
                assert time.monotonic() < deadline, "the push with the secured credentials never arrived"
                time.sleep(0.05)
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
        for secret in (BACKEND_KEY, PUSH_PASSWORD):
            assert secret not in logs
