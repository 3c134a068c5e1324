"""template.yaml, read as data: authentication and throttling on the API, least-privilege IAM, no
secret in defaults or environment."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.template import load_template

TEMPLATE = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
RESOURCES = TEMPLATE["Resources"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
SECRET_NAME = re.compile(r"(key|token|password|secret|dsn|credential)", re.IGNORECASE)


def statements(node: Any) -> Iterator[dict]:
    """Every IAM policy statement anywhere under ``node`` (inline policies, Fn::If branches, roles)."""
    if isinstance(node, dict):
        found = node.get("Statement")
        if isinstance(found, list):
            yield from (s for s in found if isinstance(s, dict))
        elif isinstance(found, dict):
            yield found
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from statements(value)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


ALL_STATEMENTS = list(statements(RESOURCES))


def test_there_are_policies_to_check():
    assert len(ALL_STATEMENTS) >= 8
    assert all(fn["Properties"].get("Policies") for fn in FUNCTIONS.values())


@pytest.mark.parametrize("statement", ALL_STATEMENTS, ids=lambda s: ",".join(map(str, as_list(s.get("Action")))))
def test_no_statement_allows_a_wildcard_action_or_resource(statement):
    assert "NotAction" not in statement and "NotResource" not in statement
    assert statement.get("Effect") == "Allow"
    for action in as_list(statement["Action"]):
        assert isinstance(action, str) and "*" not in action, action
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), action
    for resource in as_list(statement["Resource"]):
        assert resource != "*", statement
        if isinstance(resource, str):
            assert not resource.endswith(":*"), resource


def test_functions_use_only_their_inline_statements_no_managed_or_sam_policy_templates():
    for name, fn in FUNCTIONS.items():
        for policy in fn["Properties"]["Policies"]:
            # A statement list, or one behind a condition; never "AmazonDynamoDBFullAccess" nor
            # SAM's DynamoDBCrudPolicy (which grants table deletion among much else).
            assert isinstance(policy, dict), (name, policy)
            assert set(policy) <= {"Statement", "Fn::If"}, (name, policy)


def test_object_access_is_confined_to_the_model_prefix():
    for statement in ALL_STATEMENTS:
        if any(str(a).startswith("s3:") for a in as_list(statement["Action"])):
            for resource in as_list(statement["Resource"]):
                assert "Fn::Sub" in resource and resource["Fn::Sub"].endswith("/models/*"), resource


def test_secrets_are_read_only_from_the_arns_the_stack_is_given():
    for statement in ALL_STATEMENTS:
        if any(str(a).startswith("secretsmanager:") for a in as_list(statement["Action"])):
            assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"]
            assert all(
                r in ({"Ref": "BackendApiKeySecretArn"}, {"Ref": "PushgatewayCredentialsSecretArn"}) for r in as_list(statement["Resource"])
            ), statement


@pytest.mark.parametrize("api_id", ["PricingApi", "OperatorApi"])
def test_the_api_requires_an_api_key_and_throttles(api_id):
    api = RESOURCES[api_id]["Properties"]
    assert api["Auth"]["ApiKeyRequired"] is True
    plan = api["Auth"]["UsagePlan"]
    assert plan["CreateUsagePlan"] in ("PER_API", "SHARED")
    assert {"RateLimit", "BurstLimit"} <= set(plan["Throttle"]) and plan["Quota"]["Limit"] > 0
    (settings,) = api["MethodSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(settings)


def test_every_http_route_is_on_the_authenticated_api():
    # An Api event without RestApiId would land on SAM's implicit API, which has no key check.
    routes = [
        (name, e)
        for name, fn in FUNCTIONS.items()
        for e in (fn["Properties"].get("Events") or {}).values()
        if e["Type"] in ("Api", "HttpApi")
    ]
    assert {e["Properties"]["Path"] for _, e in routes} >= {"/score", "/health", "/learn"}
    for name, event in routes:
        # State changes (POST /ab/...) only on the operator API, with its own usage plan and
        # keys: API Gateway refuses a pricing caller's key there (403).
        operator = event["Properties"]["Method"] == "POST" and event["Properties"]["Path"].startswith("/ab/")
        expected_api = "OperatorApi" if operator else "PricingApi"
        assert event["Type"] == "Api" and event["Properties"]["RestApiId"] == {"Ref": expected_api}, name
        assert event["Properties"].get("Auth", {}).get("ApiKeyRequired", True) is True, name


def test_the_two_apis_have_separate_usage_plans():
    outputs = TEMPLATE["Outputs"]
    assert outputs["ApiKeyUsagePlan"]["Value"] == {"Ref": "PricingApiUsagePlan"}
    assert outputs["OperatorKeyUsagePlan"]["Value"] == {"Ref": "OperatorApiUsagePlan"}


def test_no_parameter_default_is_a_secret():
    for name, parameter in TEMPLATE["Parameters"].items():
        if SECRET_NAME.search(name) and not name.endswith("SecretArn"):
            assert parameter.get("NoEcho") is True, name
            assert parameter.get("Default", "") == "", name
        default = str(parameter.get("Default", ""))
        assert not re.search(r"[A-Za-z0-9+/]{24,}|://[^/\s]*@", default), (name, default)


def environments() -> Iterator[tuple[str, str, Any]]:
    yield from (("Globals", k, v) for k, v in TEMPLATE["Globals"]["Function"]["Environment"]["Variables"].items())
    for name, fn in FUNCTIONS.items():
        for key, value in ((fn["Properties"].get("Environment") or {}).get("Variables") or {}).items():
            yield name, key, value


def test_no_credential_is_in_a_function_environment_only_arns_and_parameters():
    for where, key, value in environments():
        if SECRET_NAME.search(key):
            # Secrets travel as the ARN of a Secrets Manager secret; the Sentry DSN (a write-only
            # ingestion key) as a NoEcho parameter.
            assert key.endswith("_SECRET_ARN") or key == "SENTRY_DSN", (where, key)
            assert isinstance(value, dict) and "Ref" in value, (where, key, value)
    keys = {key for _, key, _ in environments()}
    assert not keys & {"BACKEND_API_KEY", "PUSHGATEWAY_PASSWORD", "PUSHGATEWAY_BEARER_TOKEN", "PUSHGATEWAY_USERNAME"}


def test_stores_are_encrypted_and_the_bucket_is_private():
    bucket = RESOURCES["ArtifactsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::DynamoDB::Table":
            assert resource["Properties"]["SSESpecification"]["SSEEnabled"] is True, name
        if resource["Type"] == "AWS::SQS::Queue":
            assert resource["Properties"].get("SqsManagedSseEnabled") is True, name


def test_make_run_checks_api_keys_only_when_asked():
    # As `sam local start-api`: no key check locally unless LOCAL_REQUIRE_API_KEY names the key
    # (the local API then answers 403 without it: tests/integration/test_local_lambda_api.py).
    from local.stack import StackOptions

    assert StackOptions.from_env({}).require_api_key is None
    assert StackOptions.from_env({"LOCAL_REQUIRE_API_KEY": "k-123"}).require_api_key == "k-123"
    assert StackOptions.from_env({}).operator_api_key is None
    assert StackOptions.from_env({"LOCAL_OPERATOR_API_KEY": "op-1"}).operator_api_key == "op-1"
