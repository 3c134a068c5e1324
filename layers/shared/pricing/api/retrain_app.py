"""RetrainFunction's app: the scheduled retraining run, its fanned-out batches, and manual invokes.

The function's composition root: it reads the settings and configures metrics, logging and
Sentry at import (Sentry's Lambda integration must wrap the handler before the first
invocation); the service and its storage are built on first use and live as long as the
container. No FastAPI here: the retrain function never pays for importing it.

``dispatch`` takes the daily schedule or a manual invoke without ``property_ids`` (every property,
fanned out to the queue in batches, under Sentry's cron monitor), an SQS batch of those (each
message retrained through Powertools' ``BatchProcessor``; ``batchItemFailures`` names the
malformed ones and those whose store was unavailable), or a manual invoke naming properties
(``{"property_ids": [...], "force": true}``, bare or under ``detail``, answered with the results).
Why SQS, and the steps per property: docs/pricing-loop.md ("Retraining, step by step").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pricing.observability import metrics
from pricing.observability.context import bind_request_id, invocation_request_id, logger, set_service_name
from pricing.observability.push import pushes_metrics
from pricing.observability.sentry import init_from_settings, report_once, retrain_monitor
from pricing.services.retraining import InvalidRetrainEvent, RetrainingService, parse_request, worth_retrying
from pricing.settings import Settings
from pricing.storage.artifacts import ArtifactStore
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.queue import MessageQueue
from pricing.storage.registry import Registry
from pricing.storage.secrets import resolve_secrets

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

_aws = AwsClients()
settings = resolve_secrets(Settings.from_env(), _aws)  # once per container: the secrets its ARNs name
set_service_name(settings.service_name)
metrics.METRICS.cap_property_labels(settings.metrics_max_property_labels)
init_from_settings(settings)
metrics.set_service_info(version=settings.release, environment=settings.environment, service="retrain")
_service: RetrainingService | None = None


def service() -> RetrainingService:
    """The container's service, built on first use (its clients live as long as the container)."""
    global _service
    if _service is None:
        _service = RetrainingService(
            settings,
            Registry(_aws, settings.registry_table),
            ArtifactStore(_aws, settings.artifacts_bucket),
            OutcomeStore(_aws, settings.outcomes_table),
            MessageQueue(_aws),
        )
    return _service


class RetryMessage(RuntimeError):
    """A queued batch to retry: a property failed on an unavailable store."""


def dispatch(retraining: RetrainingService, event: Any, context: Any = None) -> dict[str, Any]:
    """One invocation of the function (see the module docstring). Raises ``InvalidRetrainEvent``
    for an event that is neither an SQS batch nor a valid request."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        return retrain_messages(retraining, event, context)
    request = parse_request(event)
    at = retraining.as_of(request.as_of)
    if request.property_ids is None:
        with retrain_monitor():
            return at.scheduled_run(request.force, remaining)
    return at.retrain_now(list(request.property_ids), request.force, remaining)


def retrain_messages(retraining: RetrainingService, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """An SQS batch: each message retrained in turn; the failed ones listed in ``batchItemFailures``."""
    if not event["Records"]:
        return {"batchItemFailures": []}
    # Imported here: Powertools' batch package loads a data class for every event source (a median
    # 37 ms after the rest of the app, 7 runs), which the scheduled run and manual invokes have no use for.
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    remaining = getattr(context, "get_remaining_time_in_millis", None)

    # Powertools passes the record by this parameter name.
    def record_handler(record: SQSRecord) -> None:
        logger.append_keys(message_id=record.message_id)
        try:
            try:
                request = parse_request(json.loads(record.get("body") or ""))
                at = retraining.as_of(request.as_of)
            except (ValueError, InvalidRetrainEvent) as exc:
                report_once("retrain_message_malformed", f"malformed retrain message: {exc}")
                logger.error("malformed retrain message", extra={"error": str(exc)})
                raise
            if worth_retrying(at.retrain_batch(request, remaining)):
                raise RetryMessage("a store was unavailable")
        finally:
            logger.remove_keys(["message_id"])

    # A batch whose every message failed is still answered with its failures, not raised: the
    # event source mapping then retries exactly those, as with any partial failure.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context))


@pushes_metrics(settings=settings, function="retrain")
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # The schedule's event id (else the Lambda request id) on every log line and Sentry event.
    bind_request_id(invocation_request_id(event, context))
    return dispatch(service(), event, context)
