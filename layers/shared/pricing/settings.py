"""Configuration, read once from the environment into one immutable object.

Every environment variable the service reads is named here and nowhere else. Each function's app
module (``pricing.api.score_app``, ``ingest_app``, ``retrain_app``: the composition roots) reads
``Settings.from_env()`` once, at import, and passes it, or the values it needs, to what it builds;
no other module reads the environment or keeps settings of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pricing import __version__
from pricing.domain.holdback import holdback_share


class ConfigurationError(ValueError):
    """An environment variable holds a value the service cannot run with."""


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise ConfigurationError(f"{name}={value} is outside [{lo}, {hi}]")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return int(_float(env, name, default, lo, hi))


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not true or false")


@dataclass(frozen=True)
class Settings:
    """The service's configuration.

    Environment variables (all optional; the defaults run the service locally):

    ``ENVIRONMENT``, ``RELEASE``                    deployment name and version
    ``SENTRY_DSN``, ``SENTRY_TRACES_SAMPLE_RATE``   Sentry (empty DSN: Sentry off)
    ``PUSHGATEWAY_URL``                             Pushgateway base URL (empty: no push)
    ``PUSHGATEWAY_URLS``                            comma-separated Pushgateway shards (overrides
                                                    PUSHGATEWAY_URL; a container picks one by a
                                                    stable hash of its instance id)
    ``PROMETHEUS_URL``                              Prometheus scraping them: pruning asks it for
                                                    stale groups (empty: pruning lists each shard)
    ``PUSHGATEWAY_TIMEOUT_SECONDS``                 bound on one push (default 0.25)
    ``PUSHGATEWAY_USERNAME``/``PUSHGATEWAY_PASSWORD`` or ``PUSHGATEWAY_BEARER_TOKEN``
    ``PUSHGATEWAY_CREDENTIALS_SECRET_ARN``          Secrets Manager secret with those credentials
    ``PUSHGATEWAY_GROUP_TTL_SECONDS``               age after which a silent group is pruned
    ``ARTIFACTS_BUCKET``                            S3 bucket for model artifacts
    ``OUTCOMES_TABLE``, ``REGISTRY_TABLE``, ``EXPERIMENTS_TABLE``  DynamoDB tables
    ``BACKEND_API_URL``, ``BACKEND_API_KEY``        competitor-data backend (empty URL: none)
    ``BACKEND_API_KEY_SECRET_ARN``                  Secrets Manager secret holding that key
    ``COMPETITOR_TIMEOUT_SECONDS``                  bound on one backend call (default 0.3)
    ``MODEL_CACHE_TTL_SECONDS``                     in-container model cache lifetime
    ``MODEL_CACHE_NEGATIVE_TTL_SECONDS``            lifetime of a cached "no model" (default 15)
    ``EXPERIMENTS_CACHE_TTL_SECONDS``               how long a container assigns from the experiments it read (default 60)
    ``MAX_BODY_BYTES``                              request bodies above this are a 413
    ``RETRAIN_BATCH_SIZE``                          properties per fanned-out retrain invocation
    ``RETRAIN_QUEUE_URL``                           SQS queue of retrain batches (empty: run inline)
    ``METRICS_MAX_PROPERTY_LABELS``                 distinct property_id label values per container
    ``EXPLORATION_RATE``                            share of quotes priced at a neighbour of the optimum (0-0.25, default 0.1)
    ``EXPLORATION_DISABLED_PROPERTIES``             comma-separated property ids that never explore
    ``EXPLORATION_DIRECTED``                        while rules price, explore where the retrain points (default true)
    ``HOLDBACK_RATE``                               share of a modelled property's quotes priced by rules (0-0.2, default 0.05)
    ``HOLDBACK_DISABLED_PROPERTIES``                comma-separated property ids without a rules holdback
    ``HOLDBACK_MAINTENANCE_RATE``                   the share once the live model has been shown to beat rules (0-0.2, default 0.01)
    ``AWS_LAMBDA_FUNCTION_NAME``, ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``  set by Lambda
    ``AWS_LAMBDA_RUNTIME_API``                      set by Lambda: a runtime client serves this process
    """

    environment: str = "development"
    release: str = __version__
    service_name: str = "pricing"
    sentry_dsn: str = ""
    sentry_traces_sample_rate: float = 0.1
    pushgateway_url: str = ""
    pushgateway_urls: tuple[str, ...] = ()
    prometheus_url: str = ""
    pushgateway_timeout_seconds: float = 0.25
    pushgateway_username: str = ""
    pushgateway_password: str = field(default="", repr=False)
    pushgateway_bearer_token: str = field(default="", repr=False)
    pushgateway_group_ttl_seconds: int = 900
    artifacts_bucket: str = "pricing-artifacts"
    outcomes_table: str = "pricing-outcomes"
    registry_table: str = "pricing-model-registry"
    experiments_table: str = "pricing-experiments"
    backend_api_url: str = ""
    backend_api_key: str = field(default="", repr=False)
    backend_api_key_secret_arn: str = ""
    pushgateway_credentials_secret_arn: str = ""
    competitor_timeout_seconds: float = 0.3
    model_cache_ttl_seconds: int = 300
    model_cache_negative_ttl_seconds: int = 15
    experiments_cache_ttl_seconds: float = 60.0
    max_body_bytes: int = 6 * 1024 * 1024 - 1
    retrain_batch_size: int = 100
    retrain_queue_url: str = ""
    function_name: str = "local"
    function_memory_mb: int = 0
    lambda_runtime_api: str = ""
    metrics_max_property_labels: int = 200
    exploration_rate: float = 0.1
    exploration_disabled_properties: frozenset[str] = frozenset()
    exploration_directed: bool = True
    holdback_rate: float = 0.05
    holdback_disabled_properties: frozenset[str] = frozenset()
    holdback_maintenance_rate: float = 0.01

    def holdback_rate_for(self, property_id: str, mode: str | None = None) -> float:
        """The property's rules holdback share: 0 when it is switched off for it; for a live
        model the guard has shown to beat rules (``mode`` maintenance) the maintenance share."""
        if property_id in self.holdback_disabled_properties:
            return 0.0
        return holdback_share(mode, self.holdback_rate, self.holdback_maintenance_rate)

    @property
    def pushgateways(self) -> tuple[str, ...]:
        """The Pushgateway shards, in their configured order (empty: no push)."""
        if self.pushgateway_urls:
            return self.pushgateway_urls
        return (self.pushgateway_url,) if self.pushgateway_url else ()

    def exploration_rate_for(self, property_id: str) -> float:
        """The property's exploration rate: 0 when it is switched off for it."""
        return 0.0 if property_id in self.exploration_disabled_properties else self.exploration_rate

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            environment=env.get("ENVIRONMENT") or d.environment,
            release=env.get("RELEASE") or d.release,
            service_name=env.get("POWERTOOLS_SERVICE_NAME") or d.service_name,
            sentry_dsn=env.get("SENTRY_DSN", ""),
            sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", d.sentry_traces_sample_rate, 0.0, 1.0),
            pushgateway_url=env.get("PUSHGATEWAY_URL", "").rstrip("/"),
            pushgateway_urls=tuple(u.strip().rstrip("/") for u in env.get("PUSHGATEWAY_URLS", "").split(",") if u.strip()),
            prometheus_url=env.get("PROMETHEUS_URL", "").rstrip("/"),
            pushgateway_timeout_seconds=_float(env, "PUSHGATEWAY_TIMEOUT_SECONDS", d.pushgateway_timeout_seconds, 0.01, 5.0),
            pushgateway_username=env.get("PUSHGATEWAY_USERNAME", ""),
            pushgateway_password=env.get("PUSHGATEWAY_PASSWORD", ""),
            pushgateway_bearer_token=env.get("PUSHGATEWAY_BEARER_TOKEN", ""),
            pushgateway_group_ttl_seconds=_int(env, "PUSHGATEWAY_GROUP_TTL_SECONDS", d.pushgateway_group_ttl_seconds, 5, 86400),
            artifacts_bucket=env.get("ARTIFACTS_BUCKET") or d.artifacts_bucket,
            outcomes_table=env.get("OUTCOMES_TABLE") or d.outcomes_table,
            registry_table=env.get("REGISTRY_TABLE") or d.registry_table,
            experiments_table=env.get("EXPERIMENTS_TABLE") or d.experiments_table,
            backend_api_url=env.get("BACKEND_API_URL", "").rstrip("/"),
            backend_api_key=env.get("BACKEND_API_KEY", ""),
            backend_api_key_secret_arn=env.get("BACKEND_API_KEY_SECRET_ARN", ""),
            pushgateway_credentials_secret_arn=env.get("PUSHGATEWAY_CREDENTIALS_SECRET_ARN", ""),
            competitor_timeout_seconds=_float(env, "COMPETITOR_TIMEOUT_SECONDS", d.competitor_timeout_seconds, 0.01, 10.0),
            model_cache_ttl_seconds=_int(env, "MODEL_CACHE_TTL_SECONDS", d.model_cache_ttl_seconds, 0, 86400),
            model_cache_negative_ttl_seconds=_int(env, "MODEL_CACHE_NEGATIVE_TTL_SECONDS", d.model_cache_negative_ttl_seconds, 0, 86400),
            experiments_cache_ttl_seconds=_float(env, "EXPERIMENTS_CACHE_TTL_SECONDS", d.experiments_cache_ttl_seconds, 0.0, 3600.0),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", d.max_body_bytes, 1024, 6 * 1024 * 1024),
            retrain_batch_size=_int(env, "RETRAIN_BATCH_SIZE", d.retrain_batch_size, 1, 10000),
            retrain_queue_url=env.get("RETRAIN_QUEUE_URL", ""),
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME") or d.function_name,
            function_memory_mb=_int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", d.function_memory_mb, 0, 10240),
            lambda_runtime_api=env.get("AWS_LAMBDA_RUNTIME_API", ""),
            metrics_max_property_labels=_int(env, "METRICS_MAX_PROPERTY_LABELS", d.metrics_max_property_labels, 1, 100000),
            exploration_rate=_float(env, "EXPLORATION_RATE", d.exploration_rate, 0.0, 0.25),
            exploration_disabled_properties=frozenset(
                p.strip() for p in env.get("EXPLORATION_DISABLED_PROPERTIES", "").split(",") if p.strip()
            ),
            exploration_directed=_bool(env, "EXPLORATION_DIRECTED", d.exploration_directed),
            holdback_rate=_float(env, "HOLDBACK_RATE", d.holdback_rate, 0.0, 0.2),
            holdback_disabled_properties=frozenset(p.strip() for p in env.get("HOLDBACK_DISABLED_PROPERTIES", "").split(",") if p.strip()),
            holdback_maintenance_rate=_float(env, "HOLDBACK_MAINTENANCE_RATE", d.holdback_maintenance_rate, 0.0, 0.2),
        )
