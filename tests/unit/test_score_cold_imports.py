"""What a ScoreFunction cold start imports, up to its first POST /score.

A new container pays for every module its handler's import and first request load. The modules
below serve other functions, other routes or the offline learning loop; none is needed to price
a quote, and an import of one reaching the /score path (a top-level import in a module scoring
uses, a helper moved to the wrong module) would make every cold start pay for it unnoticed:
nothing else fails. Each check runs in a fresh interpreter, as a container does, with
``AWS_LAMBDA_RUNTIME_API`` set as under Lambda and the stores unreachable (the quote is then
priced by rules, after the same store calls a cold /score makes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.apigw_events import rest_event

ROOT = Path(__file__).resolve().parents[2]

#: Never on the /score path, at import or after the first quote.
NOT_FOR_SCORING = {
    # the offline learning loop (RetrainFunction) and ingestion (IngestFunction)
    "pricing.domain.training",
    "pricing.domain.policy_evaluation",
    "pricing.domain.simulator",
    "pricing.domain.drift",
    "pricing.domain.outcomes",
    "pricing.services.retraining",
    "pricing.services.ingestion",
    "pricing.storage.outcomes",
    "pricing.storage.queue",
    "pricing.storage.stores",
    "pricing.api.retrain_app",
    "pricing.api.ingest_app",
    # the model and experiment routes, registered on their first request
    "pricing.api.operations",
    "pricing.services.catalog",
    "pricing.services.experiment_admin",
    # libraries the scoring path does not use
    "numpy",
    "jsonschema",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.parameters",
}
#: The AWS SDK's sessions and clients: loaded by the first store call, not by the import, so that
#: /health and a refused request never pay for them. (Powertools' import loads ``botocore``'s
#: package module alone, for its user agent.)
FIRST_STORE_CALL = {"boto3", "botocore.session", "botocore.client", "s3transfer"}

_PROBE = r"""
import json, sys
from types import SimpleNamespace
from score_handler import handler
at_import = sorted(sys.modules)
event = json.loads(sys.argv[1])
context = SimpleNamespace(aws_request_id="cold", function_name="pricing-score-test", memory_limit_in_mb=1024,
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:pricing-score-test",
                          get_remaining_time_in_millis=lambda: 10000)
result = handler(event, context)
print(json.dumps({"status": result["statusCode"], "body": json.loads(result["body"]),
                  "at_import": at_import, "after_first_score": sorted(sys.modules)}))
"""

QUOTE = {
    "entity": {"userId": "user-1", "propertyId": "prop-1"},
    "stay_date": "2026-12-24",
    "quote_time": "2026-11-26T12:00:00Z",
    "inventory": {"capacity": 50, "remaining": 10},
}


def _refused_port() -> int:
    """A loopback port nothing listens on: every store call is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cold_score() -> dict:
    endpoint = f"http://127.0.0.1:{_refused_port()}"
    paths = [ROOT / "functions" / "score", ROOT / "layers" / "shared"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9",  # as under Lambda: the app's cold-start path
        "AWS_LAMBDA_FUNCTION_NAME": "pricing-score-test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "PUSHGATEWAY_URL": "",
        "SENTRY_DSN": "",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    event = json.dumps(rest_event("POST", "/score", QUOTE))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, event], cwd=ROOT / "functions" / "score", env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, result["body"]
    return result


def test_the_first_quote_was_priced_after_the_store_calls(cold_score):
    # Priced by rules because the stores were refused: the store calls were made, so the
    # modules they load are in the second list.
    assert cold_score["body"]["safety"]["pricing_method"] != "ml_elasticity"
    assert set(cold_score["after_first_score"]) >= FIRST_STORE_CALL


def _loaded(modules: list[str], names: set[str]) -> set[str]:
    return {m for m in modules if m in names or any(m.startswith(n + ".") for n in names)}


def test_the_import_loads_nothing_only_other_functions_or_routes_use(cold_score):
    assert _loaded(cold_score["at_import"], NOT_FOR_SCORING) == set()


def test_the_import_leaves_the_aws_sdk_to_the_first_store_call(cold_score):
    assert _loaded(cold_score["at_import"], FIRST_STORE_CALL) == set()


def test_the_first_quote_loads_nothing_only_other_functions_or_routes_use(cold_score):
    assert _loaded(cold_score["after_first_score"], NOT_FOR_SCORING) == set()
