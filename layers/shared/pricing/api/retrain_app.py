"""RetrainFunction's app: the scheduled retraining run, its fanned-out batches, and manual invokes.

The function's composition root: it reads the settings and configures metrics, logging and
Sentry at import (Sentry's Lambda integration must wrap the handler before the first
invocation); the service and its storage are built on first use and live as long as the
container. What the events mean: ``pricing.services.retraining``. No FastAPI here: the retrain
function never pays for importing it.
"""

from __future__ import annotations

from typing import Any

from pricing.observability import metrics
from pricing.observability.context import logger, set_service_name
from pricing.observability.push import pushes_metrics
from pricing.observability.sentry import init_from_settings
from pricing.services.retraining import RetrainingService
from pricing.settings import Settings
from pricing.storage.artifacts import ArtifactStore
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.queue import MessageQueue
from pricing.storage.registry import Registry
from pricing.storage.secrets import resolve_secrets

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
        _service = RetrainingService(settings, Registry(_aws, settings.registry_table),
                                     ArtifactStore(_aws, settings.artifacts_bucket),
                                     OutcomeStore(_aws, settings.outcomes_table), MessageQueue(_aws))
    return _service


@pushes_metrics(settings=settings, function="retrain")
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return service().handle(event, context)
