"""The learning loop end to end: /learn, retraining and /score through the built functions.

IngestFunction and ScoreFunction answer HTTP behind the local API Gateway, RetrainFunction runs
in its own local Lambda container; all three reach moto only through ``StoreProxy``, an HTTP
proxy this module controls, so a test can take the stores away (every request dropped), fail
some writes, or hold one request while it kills the function that sent it. The registry and the
outcomes table are read back with boto3 straight from moto, past the proxy.

Moto grants everything; AWS grants what template.yaml's policies say. So every /learn, /score and
retrain here also checks that the requests its function sent through the proxy are all allowed
by that function's policy (``Loop.as_deployed``).

The last test drives the developer's flow instead: ``make run``, outcomes for a new property
through ``/learn``, ``make invoke FN=RetrainFunction``, then ``/score``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
import requests

from local import prometheus_stack
from local.services import free_port
from local.template import load_template
from pricing.domain.conversion_model import ConversionModel
from pricing.domain.outcomes import INVALID_REASONS
from pricing.domain.simulator import CURVES, DemandCurve, simulate_outcomes
from pricing.services.retraining import artifact_key
from pricing.storage.aws import from_wire
from pricing.storage.outcomes import OUTCOME_LISTING_KEY
from pricing.storage.registry import LIVE_RECORD, MODEL_RECORD_PREFIX
from pricing.storage.stores import Stores
from support.local_stack import (
    PROJECT_ROOT,
    built_artifacts,
    lambda_containers,
    local_api,
    moto_resources,
    require_function_build,
    unavailable,
)

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
CITY, RESORT, SKI = CURVES[0], CURVES[1], CURVES[2]
HTTP_TIMEOUT = 60


# --- the proxy between the functions and their stores -----------------------------------------


@dataclass(frozen=True)
class StoreRequest:
    """One request a function sent to S3 or DynamoDB, as the proxy saw it."""

    method: str
    path: str
    operation: str  # DynamoDB's X-Amz-Target operation (PutItem...), "" for S3
    body: bytes

    def needs(self, logical_ids: dict[str, str]) -> set[tuple[str, str]]:
        """The IAM (action, resource) pairs this request needs; resources as the template names
        them: ``OutcomesTable``, ``OutcomesTable/index/<name>``, ``ArtifactsBucket/<key>``."""
        if self.operation:
            body = json.loads(self.body or b"{}")
            tables = [body["TableName"]] if "TableName" in body else list(body.get("RequestItems", {}))
            suffix = f"/index/{body['IndexName']}" if "IndexName" in body else ""
            return {(f"dynamodb:{self.operation}", logical_ids.get(t, t) + suffix) for t in tables}
        bucket, _, key = self.path.split("?")[0].lstrip("/").partition("/")
        action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject"}.get(self.method, f"s3:{self.method}")
        return {(action, f"{logical_ids.get(bucket, bucket)}/{key}")}

    def item(self) -> dict:
        """The DynamoDB item of a PutItem, as plain strings (only what the tests match on)."""
        try:
            item = json.loads(self.body).get("Item", {})
        except ValueError:
            return {}
        return {k: v.get("S") for k, v in item.items() if isinstance(v, dict)}


class StoreProxy:
    """Forwards HTTP to ``upstream`` unless told otherwise.

    ``down``: every request is dropped unanswered (a store gone away); ``fail(request)`` true:
    answered with a 500 as DynamoDB's InternalServerError; ``hold(request)`` true: kept
    unanswered, ``held`` set, until ``drop_held()`` drops it.
    """

    _HOP: ClassVar = {"connection", "keep-alive", "transfer-encoding", "content-length"}

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.down = False
        self.fail: Callable[[StoreRequest], bool] | None = None
        self.hold: Callable[[StoreRequest], bool] | None = None
        self.held = threading.Event()
        self._release = threading.Event()
        self.requests: list[StoreRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="store-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StoreProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def drop_held(self) -> None:
        self.hold = None
        self._release.set()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the functions' clients expect

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
                request = StoreRequest(self.command, self.path, operation, body)
                proxy.requests.append(request)
                if proxy.down:
                    self.close_connection = True
                    return
                if proxy.hold is not None and proxy.hold(request):
                    proxy.held.set()
                    proxy._release.wait(120)
                    self.close_connection = True
                    return
                if proxy.fail is not None and proxy.fail(request):
                    error = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "injected"}
                    self._answer(500, [("Content-Type", "application/x-amz-json-1.0")], json.dumps(error).encode())
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self._answer(response.status, response.getheaders(), data)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in proxy._HOP:
                        self.send_header(name, value)
                if self.command == "HEAD":
                    length = next((v for k, v in headers if k.lower() == "content-length"), "0")
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def granted(function: str) -> set[tuple[str, str]]:
    """The (action, resource pattern) pairs template.yaml's inline policies grant ``function``."""

    def resource(node: object) -> str | None:
        if isinstance(node, dict) and "Fn::GetAtt" in node:
            return node["Fn::GetAtt"][0]
        if isinstance(node, dict) and "Fn::Sub" in node:
            m = re.fullmatch(r"\$\{(\w+)\.Arn\}(.*)", node["Fn::Sub"])
            return m.group(1) + m.group(2) if m else None
        return None

    def listed(value: object) -> list:
        return value if isinstance(value, list) else [value]

    pairs = set()
    for policy in TEMPLATE["Resources"][function]["Properties"]["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            for action in listed(statement["Action"]):
                pairs |= {(action, r) for r in map(resource, listed(statement["Resource"])) if r}
    return pairs


TEMPLATE = load_template(PROJECT_ROOT / "template.yaml")


# --- one local deployment for the module --------------------------------------------------------


@dataclass
class Loop:
    url: str
    proxy: StoreProxy
    stores: Stores  # in-process, straight to moto: to set up incumbents and read the registry
    aws: object  # support.moto_stack.AwsStack
    retrain_pool: object  # local.pool.FunctionPool of RetrainFunction
    retrain_env: dict

    @contextlib.contextmanager
    def as_deployed(self, function: str) -> Iterator[None]:
        """Fail when ``function`` used, in the block, an operation its template policy does not
        grant: moto allows everything, AWS would refuse it."""
        start = len(self.proxy.requests)
        yield
        logical_ids = {name: logical for logical, name in self.aws.names.items()}
        used = set().union(*(r.needs(logical_ids) for r in self.proxy.requests[start:]))
        allowed = granted(function)
        refused = {(a, r) for a, r in used if not any(a == ga and fnmatch.fnmatchcase(r, gr) for ga, gr in allowed)}
        assert not refused, f"{function} needs {sorted(refused)}, which template.yaml does not grant it"

    def learn(self, batch: list, *, raw: bytes | None = None) -> requests.Response:
        data = raw if raw is not None else json.dumps({"batch": batch}).encode()
        with self.as_deployed("IngestFunction"):
            return requests.post(f"{self.url}/learn", data=data, headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT)

    def learn_ok(self, outcomes: list[dict]) -> dict:
        response = self.learn(outcomes)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["invalid"] == 0 and body["processed"] + body["duplicates"] == len(outcomes), body
        return body

    def retrain(self, property_ids: list[str], force: bool = False) -> dict:
        """RetrainFunction's answer for a manual invoke of ``property_ids``."""
        with self.as_deployed("RetrainFunction"):
            result = self.retrain_pool.invoke({"property_ids": property_ids, "force": force})
        assert result.ok, result.payload[:2000]
        return result.json()

    def score(self, property_id: str) -> dict:
        body = {
            "entity": {"userId": "u-e2e", "propertyId": property_id},
            "stay_date": (NOW + timedelta(days=20)).date().isoformat(),
            "quote_time": NOW.isoformat(),
            "inventory": {"capacity": 100, "remaining": 40},
            "toggles": {"use_competitors": False},
        }
        with self.as_deployed("ScoreFunction"):
            response = requests.post(f"{self.url}/score", json=body, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def stored_outcomes(self, property_id: str) -> int:
        """Outcome items of the property in the table (its listing item is not an outcome)."""
        ddb = self.aws.client("dynamodb")
        kwargs = {
            "TableName": self.aws.names["OutcomesTable"],
            "KeyConditionExpression": "property_id = :p",
            "ExpressionAttributeValues": {":p": {"S": property_id}},
            "ProjectionExpression": "outcome_key",
        }
        keys = []
        while True:
            page = ddb.query(**kwargs)
            keys += [i["outcome_key"]["S"] for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        assert len(keys) == len(set(keys))
        return sum(1 for k in keys if k != OUTCOME_LISTING_KEY)

    def live(self, property_id: str) -> dict | None:
        item = (
            self.aws.client("dynamodb")
            .get_item(
                TableName=self.aws.names["ModelRegistryTable"],
                Key={"property_id": {"S": property_id}, "record": {"S": LIVE_RECORD}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return None if item is None else from_wire(item)

    def live_model(self, property_id: str) -> ConversionModel:
        """The model LIVE points at, loaded as the scorer loads it (fails if the artifact is missing)."""
        pointer = self.live(property_id)
        assert pointer is not None, f"{property_id} has no LIVE record"
        return ConversionModel.from_artifact(self.stores.artifacts.load_artifact(pointer["artifact_key"]))

    def deploy_true_model(self, curve: DemandCurve, property_id: str, version: str) -> None:
        """The curve itself as the live model: the best incumbent a retrain can face."""
        key = artifact_key(property_id, version)
        self.stores.artifacts.put_artifact(key, curve.true_model(property_id, version).to_artifact())
        self.stores.registry.swap_live_model(property_id, version, key, expected_version=None, deployed_at=NOW.isoformat())


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Iterator[Loop]:
    build_dir = built_artifacts()
    for function in ("ScoreFunction", "IngestFunction", "RetrainFunction"):
        require_function_build(build_dir, function)
    run_dir = tmp_path_factory.mktemp("learning-loop")
    # Every /score reads the registry: a deploy is visible at once, whatever the test order.
    env_vars = run_dir / "env.json"
    env_vars.write_text(json.dumps({"ScoreFunction": {"MODEL_CACHE_TTL_SECONDS": "0"}}))
    with contextlib.ExitStack() as stack:
        aws = stack.enter_context(moto_resources())
        proxy = stack.enter_context(StoreProxy(aws.endpoint_url))
        env = {"AWS_ENDPOINT_URL": proxy.url}
        api = stack.enter_context(local_api(build_dir=build_dir, env=env, env_vars_file=env_vars, max_containers=2, run_dir=run_dir))
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)  # the in-process stores go straight to moto
        yield Loop(api.url, proxy, Stores.build(aws.settings()), aws, api.pools["RetrainFunction"], env)


# --- /learn: counts, idempotency, storage down ------------------------------------------------------


def ts(delta: timedelta = timedelta(0)) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def outcome(pid: str, i: int, **fields) -> dict:
    base = {
        "property_id": pid,
        "timestamp": ts(-timedelta(hours=i + 1)),
        "quoted_price": 100.0 + i,
        "accepted": i % 3 == 0,
        "quote_id": f"{pid}-q{i:04d}",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


NON_FINITE = "__non_finite__"  # replaced in the raw JSON: 1e999 is valid JSON that parses as infinity


def invalid_examples(pid: str) -> dict[str, object]:
    """One item per refusal reason, each failing exactly that check."""
    return {
        "not_an_object": ["not", "an", "object"],
        "missing_field": outcome(pid, 900, quoted_price=None),
        "invalid_type": outcome(pid, 901, accepted="true"),
        "invalid_property_id": outcome(pid, 902, property_id="bad id!"),
        "invalid_timestamp": outcome(pid, 903, timestamp="26/11/2026 12:00"),
        "future_timestamp": outcome(pid, 904, timestamp=ts(timedelta(hours=1))),
        "too_old": outcome(pid, 905, timestamp=ts(-timedelta(days=800))),
        "non_finite_number": NON_FINITE,
        "non_positive_price": outcome(pid, 907, quoted_price=0),
        "negative_time_to_book": outcome(pid, 908, time_to_book=-1),
        "number_out_of_range": outcome(pid, 915, quoted_price=1e200),
        "invalid_date": outcome(pid, 909, stay_date="2026-02-30"),
        "invalid_lead_time": outcome(pid, 910, timestamp=ts(-timedelta(hours=1)), stay_date=(NOW - timedelta(days=10)).date().isoformat()),
        "invalid_quote_id": outcome(pid, 911, quote_id=""),
        "id_too_long": outcome(pid, 916, quote_id="\U0001f600" * 256),
        "invalid_attribution": outcome(pid, 912, variant=""),
        "invalid_context": outcome(pid, 913, context={"occupancy": 7}),
        "context_too_large": outcome(pid, 914, context={"notes": "x" * 5000}),
    }


def raw_batch(items: list, pid: str) -> bytes:
    text = json.dumps({"batch": items})
    finite = json.dumps(outcome(pid, 906, quoted_price=123.0))
    non_finite = finite.replace('"quoted_price": 123.0', '"quoted_price": 1e999')
    assert "1e999" in non_finite
    return text.replace(json.dumps(NON_FINITE), non_finite).encode()


def priced_by(quote: dict) -> tuple[str, str | None]:
    """(how, live model version) of a quote. With a live model, the default holdback prices a
    share of quotes by rules to measure the model against them (``safety.holdback``); such a quote
    names the live model in its reason, so it still tells which model is live."""
    safety = quote["safety"]
    if safety.get("holdback"):
        (reason,) = [r for r in quote["reasons"] if r.startswith("Holdback: priced by rules to measure live model ")]
        return "holdback", reason.split("live model ", 1)[1].split(" ", 1)[0]
    return safety["pricing_method"], safety["model_version"]


def test_learn_counts_valid_invalid_for_every_reason_and_duplicates(loop):
    pid = "e2e-learn"
    earlier = [outcome(pid, i) for i in range(5)]
    assert loop.learn_ok(earlier)["processed"] == 5

    valid = [outcome(pid, i) for i in range(10, 20)]
    unkeyed = outcome(pid, 30, quote_id=None)  # no quote id: keyed by its content
    invalid = invalid_examples(pid)
    assert set(invalid) == set(INVALID_REASONS), "every refusal reason needs an example here"
    batch = [*valid, valid[4], unkeyed, dict(unkeyed), earlier[0], earlier[3], *invalid.values()]
    first_invalid = len(batch) - len(invalid)

    response = loop.learn([], raw=raw_batch(batch, pid))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["processed"] == 11, body  # ten with quote ids and the content-keyed one
    assert body["duplicates"] == 4  # valid[4] and the unkeyed twin in the batch, two of the earlier batch
    assert body["invalid"] == len(INVALID_REASONS)
    assert body["errors"] == [{"index": first_invalid + n, "reason": r} for n, r in enumerate(invalid)]
    assert loop.stored_outcomes(pid) == 5 + 11

    # (2) The same batch again: nothing new is stored, everything valid is a duplicate.
    again = loop.learn([], raw=raw_batch(batch, pid))

    assert again.status_code == 200, again.text
    repeat = again.json()
    assert (repeat["processed"], repeat["duplicates"], repeat["invalid"]) == (0, 15, len(INVALID_REASONS))
    assert repeat["errors"] == body["errors"]
    assert loop.stored_outcomes(pid) == 16


def test_store_down_is_a_503_acknowledging_nothing_and_the_retry_stores_everything(loop, record_property):
    pid = "e2e-outage"
    batch = [outcome(pid, i) for i in range(60)]
    loop.proxy.down = True
    try:
        refused = loop.learn(batch)
    finally:
        loop.proxy.down = False

    assert refused.status_code == 503, refused.text
    record_property("refused_after_seconds", round(refused.elapsed.total_seconds(), 2))
    assert int(refused.headers["Retry-After"]) > 0
    assert not {"processed", "success", "duplicates"} & set(refused.json())
    assert loop.stored_outcomes(pid) == 0

    recovered = loop.learn(batch)  # the store is back: the caller retries the batch unchanged

    assert recovered.status_code == 200, recovered.text
    assert (recovered.json()["processed"], recovered.json()["duplicates"]) == (60, 0)
    assert loop.stored_outcomes(pid) == 60


def test_store_failing_part_way_loses_nothing_once_the_batch_is_retried(loop, record_property):
    pid = "e2e-partial"
    batch = [outcome(pid, i) for i in range(300)]  # 300 conditional PutItem calls
    writes = {"n": 0}
    lock = threading.Lock()

    def after_a_hundred_writes(request: StoreRequest) -> bool:
        if request.operation != "PutItem":
            return False
        with lock:
            writes["n"] += 1
            return writes["n"] > 100

    loop.proxy.fail = after_a_hundred_writes
    try:
        refused = loop.learn(batch)
    finally:
        loop.proxy.fail = None

    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers
    partially = loop.stored_outcomes(pid)
    record_property("stored_by_the_refused_attempt", partially)
    assert 0 < partially < 300  # stored, but not acknowledged

    recovered = loop.learn(batch)

    assert recovered.status_code == 200, recovered.text
    body = recovered.json()
    assert (body["processed"], body["duplicates"]) == (300 - partially, partially)
    assert loop.stored_outcomes(pid) == 300


# --- retraining -----------------------------------------------------------------------------------


def finite_figures(figures: dict) -> bool:
    return bool(figures) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures.values())


def test_drifted_data_retrains_and_deploys_and_score_prices_with_the_new_model(loop, record_property):
    pid = "e2e-drift"
    loop.learn_ok(simulate_outcomes(CITY, 700, seed=3, now=NOW - timedelta(days=40), property_id=pid, occupancy=(0.0, 0.5)))
    (first,) = loop.retrain([pid])["results"]
    assert first["status"] == "deployed", first

    # The market moves: the property fills up and guests become less price-sensitive.
    moved = replace(CITY, name="city-hotel-moved", intercept=1.2, price_effect=-1.6)
    loop.learn_ok(simulate_outcomes(moved, 700, seed=4, now=NOW, property_id=pid, history_days=35, occupancy=(0.6, 1.0)))
    answer = loop.retrain([pid], force=False)

    (second,) = answer["results"]
    assert second["status"] == "deployed", second
    assert answer["summary"]["deployed"] == 1
    drift = second["drift"]
    assert drift["detected"] is True and "occupancy" in drift["drifted_features"]
    assert finite_figures(drift["psi"]) and drift["psi"]["occupancy"] >= 0.25
    assert drift["sample_size"] == 700
    assert any("PSI" in t for t in second["triggers"]) and "forced" not in second["triggers"]
    record_property("psi", json.dumps(drift["psi"]))
    pointer = loop.live(pid)
    assert (pointer["version"], pointer["previous_version"]) == (second["version"], first["version"])
    # The live model now misses the bookings and, judged on the newest data, earns less than rules:
    # a model of the new market replaces it if it beats rules, else rules price (a rollback).
    quote = loop.score(pid)
    if second["version"].startswith("rules-since-"):
        assert second["reason"].startswith("rolled back to rule-based pricing"), second
        assert "artifact_key" not in pointer
        assert quote["safety"]["pricing_method"] == "rule_based"
        assert any("rolled back to rules after demand drift" in r for r in quote["reasons"])
    else:
        evaluation = second["evaluation"]
        record_property("revenue", json.dumps(evaluation["revenue"]))
        assert loop.live_model(pid).version == second["version"]
        assert priced_by(quote) in {("ml_elasticity", second["version"]), ("holdback", second["version"])}


def test_a_worse_candidate_is_rejected_and_the_incumbent_keeps_serving(loop, record_property):
    pid = "e2e-lodge"
    loop.deploy_true_model(SKI, pid, "v-true")
    # Most of the window is stale data from another market (say a mis-mapped property); only
    # the newest fifth -- the holdout -- is the lodge's real demand.
    loop.learn_ok(simulate_outcomes(CITY, 640, seed=5, now=NOW - timedelta(days=20), property_id=pid))
    loop.learn_ok(simulate_outcomes(SKI, 160, seed=1, now=NOW, property_id=pid, history_days=19))

    (result,) = loop.retrain([pid], force=True)["results"]

    assert result["status"] == "rejected", result
    assert "not better than incumbent v-true" in result["reason"]
    record_property("reason", result["reason"])
    assert result["evaluation"]["candidate"]["log_loss"] > result["evaluation"]["incumbent"]["log_loss"]
    assert loop.live(pid)["version"] == "v-true"
    quote = loop.score(pid)
    assert priced_by(quote) in {("ml_elasticity", "v-true"), ("holdback", "v-true")}


def test_a_retrain_killed_mid_deploy_leaves_the_registry_pointing_at_a_loadable_model(loop, tmp_path):
    pid = "e2e-resort"
    loop.deploy_true_model(RESORT, pid, "v-old")
    # Demand has collapsed: a candidate fitted to it beats the old curve clearly (z ~ 7).
    moved = replace(RESORT, name="beach-resort-moved", intercept=0.0, price_effect=-2.5)
    loop.learn_ok(simulate_outcomes(moved, 600, seed=6, now=NOW, property_id=pid))

    def live_swap(request: StoreRequest) -> bool:
        item = request.item()
        return request.operation == "PutItem" and item.get("property_id") == pid and item.get("record") == LIVE_RECORD

    loop.proxy.held.clear()
    loop.proxy.hold = live_swap
    outcome_of: dict = {}
    with lambda_containers("RetrainFunction", env=loop.retrain_env, log_dir=tmp_path) as containers:
        container = containers.containers[0]
        run = threading.Thread(target=lambda: outcome_of.update(result=containers.invoke({"property_ids": [pid], "force": True})))
        run.start()
        try:
            while run.is_alive() and not loop.proxy.held.wait(0.05):
                pass
            assert loop.proxy.held.is_set(), f"the retrain never reached the LIVE swap: {outcome_of}"
            os.killpg(container.pid, signal.SIGKILL)  # the container dies with the swap in flight
            run.join(60)
        finally:
            loop.proxy.drop_held()
    result = outcome_of["result"]
    assert result.outcome == "exit" and not result.ok

    pointer = loop.live(pid)
    assert pointer["version"] == "v-old"
    assert loop.live_model(pid).version == "v-old"  # LIVE names an artifact that exists and loads
    versions = {r["version"]: r for r in loop.stores.registry.list_model_records(pid)}
    (candidate,) = versions.values()  # the crashed run's candidate: recorded, never deployed
    assert candidate["status"] == "pending"
    assert loop.stores.artifacts.load_artifact(candidate["artifact_key"])["version"] == candidate["version"]
    quote = loop.score(pid)
    assert priced_by(quote) in {("ml_elasticity", "v-old"), ("holdback", "v-old")}

    # The next run (a new container) works from whatever state the crash left.
    (after,) = loop.retrain([pid], force=True)["results"]
    assert after["status"] == "deployed", after
    assert loop.live_model(pid).version == after["version"] == loop.live(pid)["version"]
    assert priced_by(loop.score(pid)) in {("ml_elasticity", after["version"]), ("holdback", after["version"])}
    assert {r["record"] for r in loop.stores.registry.list_model_records(pid)} == {
        MODEL_RECORD_PREFIX + candidate["version"],
        MODEL_RECORD_PREFIX + after["version"],
    }


# --- make run, make invoke ------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less the suite's refusing AWS endpoint and other services."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN", "BACKEND_API_URL")}
    env.update(extra)
    return env


def make_is_current() -> bool:
    """True when ``make run``/``make invoke`` would run the build under test without rebuilding."""
    if os.environ.get("LOCAL_BUILD_DIR"):
        return False
    # `make run` first installs the pinned Prometheus stack when it is missing or stale.
    if not prometheus_stack.available():
        return False
    return subprocess.run(["make", "-q", "build"], cwd=PROJECT_ROOT, capture_output=True).returncode == 0


def test_make_run_learn_make_invoke_retrain_then_score_uses_the_new_model(tmp_path, record_property):
    build_dir = built_artifacts()
    require_function_build(build_dir, "RetrainFunction")
    port = free_port()
    via_make = make_is_current()
    env = clean_env(
        PORT=str(port),
        LOCAL_BUILD_DIR=str(build_dir),
        LOCAL_RUN_DIR=str(tmp_path),
        LOCAL_EVENT_SOURCES="0",
        LOCAL_METRICS="0",
        LOCAL_CONTAINER_LOGS="0",
        SEED_OUTCOMES="300",
    )
    if via_make:
        env.pop("LOCAL_BUILD_DIR")
    command = ["make", "-s", "run"] if via_make else [sys.executable, "-m", "local.run"]
    record_property("via", " ".join(command[:3]))
    runner = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        api = None
        for line in runner.stdout:  # the address table ends with the log directory
            m = re.match(r"\s+(API|Logs)\s+(\S+)", line)
            if m and m.group(1) == "API":
                api = m.group(2)
            if m and m.group(1) == "Logs":
                break
        if api is None:
            unavailable(f"make run did not start (exit status {runner.poll()})")
        assert api == f"http://127.0.0.1:{port}"

        pid = "e2e-new-property"
        outcomes = simulate_outcomes(CITY, 1200, seed=9, now=NOW, property_id=pid)
        learned = requests.post(f"{api}/learn", json={"batch": outcomes}, timeout=HTTP_TIMEOUT)
        assert learned.status_code == 200, learned.text
        assert (learned.json()["processed"], learned.json()["invalid"]) == (1200, 0)

        event = tmp_path / "retrain-event.json"
        event.write_text(json.dumps({"property_ids": [pid], "force": False}))
        invoke = (
            ["make", "-s", "invoke", "FN=RetrainFunction", f"EVENT={event}"]
            if via_make
            else [sys.executable, "-m", "local.invoke", "RetrainFunction", str(event)]
        )
        invoke_env = clean_env(LOCAL_RUN_DIR=str(tmp_path))
        if not via_make:
            invoke_env["LOCAL_BUILD_DIR"] = str(build_dir)
        invoked = subprocess.run(invoke, cwd=PROJECT_ROOT, env=invoke_env, capture_output=True, text=True, timeout=300)
        assert invoked.returncode == 0, invoked.stderr[-3000:]
        assert "using the services of make run" in invoked.stderr
        (result,) = json.loads(invoked.stdout)["results"]
        assert result["status"] == "deployed", result
        record_property("deployed_version", result["version"])

        quote = requests.post(
            f"{api}/score",
            timeout=HTTP_TIMEOUT,
            json={
                "entity": {"userId": "u-e2e", "propertyId": pid},
                "stay_date": (NOW + timedelta(days=20)).date().isoformat(),
                "quote_time": NOW.isoformat(),
                "inventory": {"capacity": 100, "remaining": 40},
                "toggles": {"use_competitors": False},
            },
        )
        assert quote.status_code == 200, quote.text
        assert priced_by(quote.json()) in {("ml_elasticity", result["version"]), ("holdback", result["version"])}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGTERM)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
