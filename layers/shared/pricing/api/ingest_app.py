"""IngestFunction's app: POST /learn, booking outcomes for the learning loop, and the outcome
statistics routes (GET /learn/outcomes/...).

The function's composition root: settings, metrics, logging, Sentry, the outcome store and the
service are built here at import, so a warm container reuses the app and its DynamoDB client.

The request is checked in two layers: the envelope (JSON, a ``batch`` list of 1-10,000 items)
by Pydantic, where a failure is a 422 for the whole request; then each outcome on its own by
``pricing.domain.outcomes``, where a failure only refuses that item (see ``INVALID_REASONS``).
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitedTooLong
from typing import Any

from fastapi import HTTPException, Request
from mangum import Mangum
from pydantic import BaseModel, ConfigDict, Field

from pricing.api.common import create_app
from pricing.api.operations import add_outcome_routes, lazy
from pricing.domain.outcomes import MAX_BATCH_OUTCOMES
from pricing.observability import metrics
from pricing.observability.context import current_request_id, logger, set_service_name
from pricing.observability.push import pushes_metrics
from pricing.observability.sentry import init_from_settings, set_request_context
from pricing.services.ingestion import IngestionService
from pricing.settings import Settings
from pricing.storage import StorageUnavailable
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.secrets import resolve_secrets

#: How long a caller should wait before re-sending a batch the store could not take.
RETRY_AFTER_SECONDS = 5
#: Time kept back from the invocation's deadline to answer and push metrics.
ANSWER_MARGIN_SECONDS = 1.5

_aws = AwsClients()
settings = resolve_secrets(Settings.from_env(), _aws)  # once per container: the secrets its ARNs name
set_service_name(settings.service_name)
metrics.METRICS.cap_property_labels(settings.metrics_max_property_labels)
init_from_settings(settings)
metrics.set_service_info(version=settings.release, environment=settings.environment, service="ingest")

service = IngestionService(OutcomeStore(_aws, settings.outcomes_table))
# Storing runs here so the request can stop waiting at its deadline: a hung store would otherwise
# hold the invocation until Lambda kills it, and the caller would get a gateway error instead of a
# 503 with Retry-After. A batch given up on may still finish storing in the background; its retry
# then finds those outcomes stored, so nothing is lost and nothing counted twice. Few workers: a
# store that hangs every batch makes later batches wait here and be refused, not pile up threads.
_storing = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest")

app = create_app(title="Pricing learn API", settings=settings)


class LearnRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Items stay untyped here: a malformed outcome refuses that item, not the batch.
    batch: list[Any] = Field(min_length=1, max_length=MAX_BATCH_OUTCOMES)


def _single_property(batch: list[Any]) -> str | None:
    # Only strings go into the set: a list or object sent as property_id is unhashable.
    ids = {item.get("property_id") if isinstance(item.get("property_id"), str) else None for item in batch if isinstance(item, dict)}
    return next(iter(ids)) if len(ids) == 1 else None


def _seconds_to_store(http: Request) -> float | None:
    """What is left of the Lambda invocation's time, less the margin to answer (None: no Lambda)."""
    remaining_ms = getattr(http.scope.get("aws.context"), "get_remaining_time_in_millis", None)
    return remaining_ms() / 1000 - ANSWER_MARGIN_SECONDS if callable(remaining_ms) else None


def _ingest_in_time(batch: list[Any], seconds: float | None):
    if seconds is None:
        return service.ingest(batch)
    future = _storing.submit(contextvars.copy_context().run, service.ingest, batch)
    try:
        return future.result(timeout=max(seconds, 0.0))
    except WaitedTooLong:
        raise StorageUnavailable(f"the outcome store did not answer within {max(seconds, 0.0):.1f} s") from None


@app.post("/learn")
def learn(request: LearnRequest, http: Request) -> dict:
    request_id = current_request_id()
    property_id = _single_property(request.batch)
    if request_id:
        set_request_context(request_id, property_id=property_id[:128] if property_id else None)
    try:
        return _ingest_in_time(request.batch, _seconds_to_store(http)).to_response()
    except StorageUnavailable as exc:
        # Raised, not returned: FastAPI's Sentry integration reports every 5xx HTTPException once,
        # and the app's handler keeps the Retry-After header and the request id.
        logger.warning("outcome store unavailable; batch refused", extra={"error": str(exc), "batch_size": len(request.batch)})
        raise HTTPException(
            status_code=503,
            detail="outcome store unavailable: nothing from this batch is acknowledged; retry it unchanged",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc


def _outcome_catalog():
    from pricing.services.catalog import OutcomeCatalog

    return OutcomeCatalog(OutcomeStore(_aws, settings.outcomes_table))


add_outcome_routes(app, lazy(_outcome_catalog))

_asgi = Mangum(app, lifespan="off")


@pushes_metrics(function="ingest", settings=settings)
def handler(event: dict, context) -> dict:
    return _asgi(event, context)
