"""The local stack reads everything from template.yaml: functions, environment, routes, resources."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from local import environment
from local.services import prometheus_config
from local.template import SamTemplate, TemplateError, match_path
from support.local_stack import PROJECT_ROOT, moto_resources

TEMPLATE = PROJECT_ROOT / "template.yaml"
ENDPOINT = "http://127.0.0.1:4566"


@pytest.fixture(scope="module")
def template() -> SamTemplate:
    return SamTemplate(TEMPLATE, endpoint_url=ENDPOINT)


def test_functions_resolve_from_the_real_template(template):
    score = template.function("ScoreFunction", "/build")
    assert score.handler == "score_handler.handler"
    assert score.code_dir == Path("/build/ScoreFunction")
    assert score.layer_dirs == (Path("/build/SharedLayer"),)
    assert score.name == "pricing-score-dev"
    assert score.timeout == 10 and score.memory_mb == 1024
    retrain = template.function("RetrainFunction", "/build")
    assert retrain.timeout == 900
    # Globals and the function's own variables, with !Ref resolved to parameters and local names.
    env = score.environment
    assert env["ENVIRONMENT"] == "dev" and env["POWERTOOLS_SERVICE_NAME"] == "pricing"
    assert env["OUTCOMES_TABLE"] == template.physical_name("OutcomesTable") == "pricing-outcomes-dev"
    assert env["ARTIFACTS_BUCKET"] == template.physical_name("ArtifactsBucket")
    assert env["MODEL_CACHE_TTL_SECONDS"] == "300" and env["SENTRY_DSN"] == ""
    assert retrain.environment["RETRAIN_QUEUE_URL"] == f"{ENDPOINT}/123456789012/pricing-retrain-dev"


def test_routes_and_stage_come_from_the_api_events(template):
    routes = {(r.method, r.path): r.function for r in template.api_routes()}
    assert routes == {
        ("POST", "/score"): "ScoreFunction",
        ("GET", "/health"): "ScoreFunction",
        ("POST", "/learn"): "IngestFunction",
        ("GET", "/"): "ScoreFunction",
        ("GET", "/model/info"): "ScoreFunction",
        ("GET", "/model/list"): "ScoreFunction",
        ("GET", "/model/registry"): "ScoreFunction",
        ("GET", "/model/metrics/{property_id}"): "ScoreFunction",
        ("GET", "/ab/experiments"): "ScoreFunction",
        ("POST", "/ab/experiments"): "ScoreFunction",
        ("GET", "/ab/experiments/{experiment_id}/results"): "ScoreFunction",
        ("POST", "/ab/experiments/{experiment_id}/stop"): "ScoreFunction",
        ("GET", "/learn/outcomes/properties"): "IngestFunction",
        ("GET", "/learn/outcomes/{property_id}/stats"): "IngestFunction",
    }
    assert {r.path for r in template.api_routes() if r.api == "OperatorApi"} == {"/ab/experiments", "/ab/experiments/{experiment_id}/stop"}
    assert template.api_stage() == "dev"


def test_parameter_overrides_change_names_and_environment():
    prod = SamTemplate(TEMPLATE, parameter_overrides={"Environment": "prod", "SentryDsn": "https://k@s.example/1"})
    assert prod.physical_name("OutcomesTable") == "pricing-outcomes-prod"
    assert prod.function("ScoreFunction", "/b").environment["SENTRY_DSN"] == "https://k@s.example/1"
    with pytest.raises(TemplateError):
        SamTemplate(TEMPLATE, parameter_overrides={"NoSuchParameter": "x"})


def test_intrinsic_functions(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(
        textwrap.dedent("""
        Parameters:
          Stage: {Type: String, Default: qa}
          Secret: {Type: String, Default: ""}
        Mappings:
          Sizes: {qa: {Memory: 256}}
        Conditions:
          IsQa: !Equals [!Ref Stage, qa]
          HasSecret: !Not [!Equals [!Ref Secret, ""]]
          Both: !And [!Condition IsQa, !Condition HasSecret]
        Resources:
          Queue:
            Type: AWS::SQS::Queue
          Table:
            Type: AWS::DynamoDB::Table
            Properties: {TableName: !Sub "t-${Stage}"}
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              Handler: app.handler
              CodeUri: src/
              MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
              Environment:
                Variables:
                  SUB_VARS: !Sub ["${A}-${Stage}-${!Literal}", {A: x}]
                  ARN: !GetAtt Table.Arn
                  QUEUE_ARN: !Sub "${Queue.Arn}"
                  QUEUE_URL: !Ref Queue
                  JOINED: !Join [",", [a, !Ref Stage]]
                  SECOND: !Select [1, !Split ["/", "a/b/c"]]
                  CHOSEN: !If [IsQa, yes-qa, not-qa]
                  GONE: !If [Both, present, !Ref AWS::NoValue]
                  REGION: !Sub "${AWS::Region}:${AWS::AccountId}"
                  NUMBER: 5
                  FLAG: true
    """)
    )
    t = SamTemplate(path, endpoint_url=ENDPOINT)
    fn = t.function("Fn")
    assert fn.code_dir == tmp_path / "src" and fn.memory_mb == 256 and fn.timeout == 3
    assert fn.environment == {
        "SUB_VARS": "x-qa-${Literal}",
        "ARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t-qa",
        "QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:pricing-local-Queue",
        "QUEUE_URL": f"{ENDPOINT}/123456789012/pricing-local-Queue",
        "JOINED": "a,qa",
        "SECOND": "b",
        "CHOSEN": "yes-qa",
        "REGION": "us-east-1:123456789012",
        "NUMBER": "5",
        "FLAG": "true",
    }


def test_path_matching_follows_api_gateway():
    assert match_path("/score", "/score") == {} and match_path("/score", "/score/") == {}
    assert match_path("/score", "/scores") is None
    assert match_path("/items/{id}", "/items/42") == {"id": "42"}
    assert match_path("/items/{id}", "/items/42/x") is None
    assert match_path("/{proxy+}", "/a/b") == {"proxy": "a/b"}


@pytest.mark.services
def test_resources_are_created_from_their_template_definitions():
    template = SamTemplate(TEMPLATE)
    with moto_resources() as aws:
        dynamodb, s3, sqs = aws.client("dynamodb"), aws.client("s3"), aws.client("sqs")
        for logical_id in ("OutcomesTable", "ModelRegistryTable", "ExperimentsTable"):
            declared = template.resolve(template.resources[logical_id]["Properties"])
            table = dynamodb.describe_table(TableName=aws.names[logical_id])["Table"]
            assert table["KeySchema"] == declared["KeySchema"]
            assert sorted(table["AttributeDefinitions"], key=str) == sorted(declared["AttributeDefinitions"], key=str)
            assert [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])] == [
                i["IndexName"] for i in declared.get("GlobalSecondaryIndexes", [])
            ]
        bucket = aws.names["ArtifactsBucket"]
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        queue = sqs.get_queue_attributes(QueueUrl=aws.queue_urls["RetrainQueue"], AttributeNames=["All"])
        redrive = json.loads(queue["Attributes"]["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(":" + aws.names["RetrainDeadLetterQueue"])
        assert queue["Attributes"]["VisibilityTimeout"] == "5400"


def test_env_vars_file_in_sam_format(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps(
            {
                "Parameters": {"SENTRY_DSN": "https://k@s.example/1", "N": 3},
                "ScoreFunction": {"BACKEND_API_URL": "http://b", "FLAG": True},
                "pricing-ingest-dev": {"ONLY_INGEST": "1"},
            }
        )
    )
    sections = environment.load_env_vars(path)
    score = environment.for_function(sections, "ScoreFunction", "pricing-score-dev")
    assert score == {"SENTRY_DSN": "https://k@s.example/1", "N": "3", "BACKEND_API_URL": "http://b", "FLAG": "true"}
    assert environment.for_function(sections, "IngestFunction", "pricing-ingest-dev")["ONLY_INGEST"] == "1"
    bad = tmp_path / "bad.json"
    bad.write_text('{"ScoreFunction": {"X": {"nested": 1}}}')
    with pytest.raises(environment.EnvVarsError):
        environment.load_env_vars(bad)


def test_override_order_services_then_given_variables_then_env_vars_file():
    overrides = environment.function_overrides(
        "ScoreFunction",
        "pricing-score-dev",
        services={"AWS_ENDPOINT_URL": "http://moto", "PUSHGATEWAY_URL": "http://local-pg"},
        host_env={"PUSHGATEWAY_URL": "http://given-pg", "SENTRY_DSN": "https://k@s/1", "HOME": "/root", "BACKEND_API_URL": ""},
        env_vars={"ScoreFunction": {"SENTRY_DSN": "https://file@s/2"}},
    )
    assert overrides == {"AWS_ENDPOINT_URL": "http://moto", "PUSHGATEWAY_URL": "http://given-pg", "SENTRY_DSN": "https://file@s/2"}


def test_prometheus_config_scrapes_the_local_pushgateway_with_honor_labels(tmp_path):
    generated = prometheus_config("127.0.0.1:19091", rule_files=[tmp_path / "rules.yml"])
    job = generated["scrape_configs"][0]
    assert job["honor_labels"] is True and job["static_configs"] == [{"targets": ["127.0.0.1:19091"]}]
    # Created timestamps come only in protobuf: it is asked for first.
    assert job["scrape_protocols"] == ["PrometheusProto", "OpenMetricsText1.0.0", "PrometheusText0.0.4"]
    assert generated["rule_files"] == [str(tmp_path / "rules.yml")]
    base = tmp_path / "prometheus.yml"
    base.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["prometheus_alerts.yml"],
                "scrape_configs": [
                    {"job_name": "pushgateway", "static_configs": [{"targets": ["pushgateway:9091"]}]},
                    {"job_name": "other", "static_configs": [{"targets": ["x:1"]}]},
                    {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
                ],
            }
        )
    )
    rewritten = prometheus_config("127.0.0.1:19091", base=base)
    assert rewritten["scrape_configs"][2]["static_configs"] == [{"targets": ["__PROMETHEUS__"]}]
    assert rewritten["rule_files"] == [str(tmp_path / "prometheus_alerts.yml")]
    assert rewritten["scrape_configs"][0] == {
        "job_name": "pushgateway",
        "honor_labels": True,
        "scrape_protocols": ["PrometheusProto", "OpenMetricsText1.0.0", "PrometheusText0.0.4"],
        "static_configs": [{"targets": ["127.0.0.1:19091"]}],
    }
    assert rewritten["scrape_configs"][1]["static_configs"] == [{"targets": ["x:1"]}]
