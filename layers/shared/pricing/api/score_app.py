"""ScoreFunction's app: POST /score and GET /health, the model and experiment routes (added when
first asked for), and the scheduled synthetic check.

The function's composition root: it reads the settings, configures metrics, logging and Sentry,
and builds the stores, the competitor client and the service, all at import, so a warm
container reuses the app, its caches and its clients.
"""

from __future__ import annotations

from pricing import coldstart
from pricing.settings import Settings

settings = Settings.from_env()
coldstart.pause_collector(settings)  # first, before the heavy imports: see pricing.coldstart

import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from fastapi import FastAPI  # noqa: E402
from mangum import Mangum  # noqa: E402

from pricing.api.common import RoutesOnDemand, create_app  # noqa: E402
from pricing.api.schemas import ScoreRequest, quote_response  # noqa: E402
from pricing.competitors import CompetitorClient  # noqa: E402
from pricing.observability import metrics  # noqa: E402
from pricing.observability.context import current_request_id, logger, set_service_name  # noqa: E402
from pricing.observability.push import prune_stale_groups, pushes_metrics  # noqa: E402
from pricing.observability.sentry import init_from_settings  # noqa: E402
from pricing.services.scoring import ScoringService  # noqa: E402
from pricing.storage.artifacts import ArtifactStore  # noqa: E402
from pricing.storage.aws import AwsClients  # noqa: E402
from pricing.storage.experiments import ExperimentStore  # noqa: E402
from pricing.storage.registry import Registry  # noqa: E402
from pricing.storage.secrets import resolve_secrets  # noqa: E402

_STARTED = time.monotonic()  # /health's uptime_seconds: this container's age
_aws = AwsClients(latency_critical=True)
settings = resolve_secrets(settings, _aws)  # once per container: the secrets its ARNs name
set_service_name(settings.service_name)
metrics.METRICS.cap_property_labels(settings.metrics_max_property_labels)
init_from_settings(settings)
metrics.set_service_info(version=settings.release, environment=settings.environment, service="score")

service = ScoringService(
    settings,
    Registry(_aws, settings.registry_table),
    ArtifactStore(_aws, settings.artifacts_bucket),
    ExperimentStore(_aws, settings.experiments_table),
    CompetitorClient(settings.backend_api_url, settings.backend_api_key, settings.competitor_timeout_seconds),
)

app = create_app(title="Pricing score API", settings=settings)


@app.post("/score")
def score(request: ScoreRequest) -> dict:
    return quote_response(*service.score(request.to_quote(), current_request_id()))


@app.get("/health")
def health() -> dict:
    return {**service.health(), "uptime_seconds": round(time.monotonic() - _STARTED, 3)}


def _add_operator_routes(app: FastAPI) -> None:
    """The model and experiment routes, registered on the first request for any route but /score
    and /health (``RoutesOnDemand``): FastAPI builds each route's dependant as it is registered,
    some 10 ms in all, which a container that only prices never needs.

    Registered after /score, which the middleware's route lookup thus still finds first. Their
    services are built on first use, with AWS clients of their own that may take their time (the
    scorer's give up within a second, as it has rules to fall back on).
    """
    from pricing.api.operations import add_experiment_routes, add_model_routes, lazy

    aws = lazy(AwsClients)

    def catalog():
        from pricing.services.catalog import ModelCatalog

        return ModelCatalog(
            Registry(aws(), settings.registry_table),
            ArtifactStore(aws(), settings.artifacts_bucket),
            service="pricing-service",
            version=settings.release,
            loaded=service.cache.models,
        )

    def experiments():
        from pricing.services.experiment_admin import ExperimentAdmin
        from pricing.storage.outcomes import OutcomeStore

        return ExperimentAdmin(
            ExperimentStore(aws(), settings.experiments_table),
            OutcomeStore(aws(), settings.outcomes_table),
            on_change=service.forget_experiments,
        )

    add_model_routes(app, lazy(catalog))
    add_experiment_routes(app, lazy(experiments))


# What Lambda serves: the app, its operator routes added before the first request that may need them.
api = RoutesOnDemand(app, _add_operator_routes, eager={("POST", "/score"), ("GET", "/health")})


SYNTHETIC_PROPERTY = "synthetic-canary"


def synthetic_check() -> dict:
    """Price a canary quote through the whole scoring path, then prune dead metric groups.

    Scheduled every minute: Lambda has no process to scrape, so this run is what proves the
    function can start, reach its stores and price (the ServiceDown alert watches its timestamp).
    """
    now = datetime.now(UTC)
    canary = ScoreRequest.model_validate(
        {
            "entity": {"userId": "synthetic", "propertyId": SYNTHETIC_PROPERTY},
            "stay_date": (now.date() + timedelta(days=14)).isoformat(),
            "quote_time": now.isoformat(),
            "inventory": {"capacity": 10, "remaining": 5},
            "toggles": {"use_competitors": False},
        }
    )
    price = service.score(canary.to_quote(), current_request_id(), synthetic=True).recommendation.price
    metrics.mark_synthetic_check()
    pruned = prune_stale_groups(settings)
    logger.info("synthetic check", extra={"price": price, "pruned_groups": pruned})
    return {"status": "healthy", "price": price, "pruned_groups": pruned, **service.health()}


_asgi = Mangum(api, lifespan="off")


@pushes_metrics(function="score", settings=settings)
def handler(event: dict, context) -> dict:
    try:
        if isinstance(event, dict) and event.get("synthetic") == "health":
            return synthetic_check()
        return _asgi(event, context)
    finally:
        coldstart.resume_collector()  # the first invocation has loaded what a warm one needs
