"""The read routes of the replaced service: the model registry and the outcomes, as callers saw them.

Everything here answers from storage (the registry, the outcomes table) with a bounded cost per
call: lists are pages of at most ``MAX_PAGE`` items behind an opaque ``next_token``, and the few
service-wide figures that must read every live pointer are cached in the container for
``SUMMARY_TTL_SECONDS``. None of it runs on the /score path: the score app builds these services
on first use, with their own (patient) storage client, not the scorer's sub-second one.

Unknown models and properties raise ``NotFound``; malformed parameters ``BadParameter`` (the apps
answer 404 and 422).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pricing.domain.conversion_model import ARTIFACT_FORMAT, FEATURE_NAMES, ConversionModel, ModelFormatError
from pricing.domain.guardrails import MAX_PRICE, MIN_PRICE
from pricing.domain.rules import DEFAULT_BASE_PRICE
from pricing.storage import StoreRefused
from pricing.storage.artifacts import ArtifactStore
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.registry import MODEL_RECORD_PREFIX, Registry

MODEL_TYPE = "conversion"  # the one model kind: P(book | price, features)
DEFAULT_PAGE, MAX_PAGE = 50, 500
SUMMARY_TTL_SECONDS = 60.0
#: /learn/outcomes/{id}/stats reads at most this many outcomes (``complete`` says whether all).
STATS_MAX_OUTCOMES = 100_000


class NotFound(LookupError):
    """The model, property or experiment asked for does not exist."""


class BadParameter(ValueError):
    """A query or path parameter the route cannot use; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def encode_token(key: dict | None) -> str | None:
    """DynamoDB's LastEvaluatedKey as an opaque, URL-safe page token (None: no more pages)."""
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":"), sort_keys=True).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> dict | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("next_token", "next_token is not a token this service issued") from None
    if not isinstance(value, dict):
        raise BadParameter("next_token", "next_token is not a token this service issued")
    return value


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise BadParameter("limit", f"limit must be from 1 to {MAX_PAGE}")
    return limit


def paged(storage_call: Callable[..., Any], *args: Any) -> Any:
    """Run a paged storage call; a forged or stale token the store refuses (each store checks the
    cursors of its lists) is a bad parameter."""
    try:
        return storage_call(*args)
    except StoreRefused:
        raise BadParameter("next_token", "next_token does not belong to this list") from None


class ModelCatalog:
    """``/``, ``/model/info``, ``/model/list``, ``/model/registry``, ``/model/metrics/{id}``.

    ``loaded`` returns this container's cached models (property id -> (model, loaded_at)).
    """

    def __init__(
        self,
        registry: Registry,
        artifacts: ArtifactStore,
        *,
        service: str,
        version: str,
        loaded: Callable[[], dict[str, tuple[ConversionModel, float]]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self.artifacts = artifacts
        self.service = service
        self.version = version
        self._loaded = loaded
        self._clock = clock
        self._summary: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def root(self) -> dict:
        return {"service": self.service, "status": "operational", "version": self.version, "timestamp": datetime.now(UTC).isoformat()}

    def _live_summary(self) -> dict:
        """Every LIVE pointer read once a minute at most: how many properties have a model."""
        with self._lock:
            if self._summary and self._summary[0] > self._clock():
                return self._summary[1]
        versions, rolled_back, start = [], 0, None
        while True:
            items, start = self.registry.live_records_page(1000, start)
            for item in items:
                if item.get("artifact_key") and item.get("version"):
                    versions.append((item["property_id"], item["version"]))
                else:
                    rolled_back += 1
            if not start:
                break
        summary = {"live": len(versions), "rolled_back": rolled_back, "training_outcomes": self.registry.training_outcomes(versions)}
        with self._lock:
            self._summary = (self._clock() + SUMMARY_TTL_SECONDS, summary)
        return summary

    def model_info(self) -> dict:
        summary = self._live_summary()
        return {
            "model_type": f"{MODEL_TYPE} ({ARTIFACT_FORMAT}, per-property logistic price elasticity)",
            "is_trained": summary["live"] > 0,
            "base_price": DEFAULT_BASE_PRICE,
            "price_range": {"min": MIN_PRICE, "max": MAX_PRICE},
            "historical_data_points": summary["training_outcomes"],
            "features": list(FEATURE_NAMES),
            "properties_with_model": summary["live"],
            "properties_rolled_back_to_rules": summary["rolled_back"],
            "loaded_models": len(self._loaded()),
        }

    def model_list(self, property_id: str | None, limit: int | None, token: str | None) -> dict:
        size, start = page_size(limit), decode_token(token)
        if property_id is None:
            # Every property's live model: the newest version of each that prices now.
            items, last = paged(self.registry.live_records_page, size, start)
            models = [self._live_view(item) for item in items if item.get("artifact_key")]
        else:
            items, last = paged(self.registry.model_records_page, property_id, size, start)
            live = self.registry.get_property_record(property_id).live_version
            if not items and start is None and live is None:
                raise NotFound(f"no model stored for property {property_id}")
            models = [self._version_view(item, live) for item in items]
        return {"success": True, "count": len(models), "models": models, "next_token": encode_token(last)}

    @staticmethod
    def _version_view(item: dict, live_version: str | None) -> dict:
        version = item.get("version") or str(item.get("record", ""))[len(MODEL_RECORD_PREFIX) :]
        return {
            "property_id": item.get("property_id"),
            "model_type": MODEL_TYPE,
            "version": version,
            "timestamp": item.get("created_at"),
            "metrics": item.get("evaluation") or {},
            "status": item.get("status"),
            "reason": item.get("reason"),
            "outcomes": item.get("outcomes"),
            "is_live": version == live_version,
        }

    @staticmethod
    def _live_view(item: dict) -> dict:
        return {
            "property_id": item.get("property_id"),
            "model_type": MODEL_TYPE,
            "version": item.get("version"),
            "timestamp": item.get("deployed_at"),
            "metrics": {},
            "is_live": True,
        }

    def model_registry(self) -> dict:
        summary = self._live_summary()
        loaded = self._loaded()
        return {
            "success": True,
            "registry": {
                "total_models": summary["live"],
                "models_by_type": {MODEL_TYPE: summary["live"]},
                "cached_models": len(loaded),
                "loaded_models": sorted(loaded),
            },
        }

    def model_metrics(self, property_id: str, model_type: str) -> dict:
        if model_type != MODEL_TYPE:
            raise BadParameter("model_type", f"model_type must be {MODEL_TYPE!r}: the only model this service trains")
        record = self.registry.get_property_record(property_id)
        if record.artifact_key is None or record.live_version is None:
            raise NotFound(f"property {property_id} has no live model")
        version = self.registry.get_model_record(property_id, record.live_version) or {}
        try:
            document = self.artifacts.load_artifact(record.artifact_key)
            model = ConversionModel.from_artifact(document)
        except (KeyError, ValueError, ModelFormatError):
            raise NotFound(f"the live model of property {property_id} has no readable artifact") from None
        canonical = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        features = [str(f) for f in document.get("features") or FEATURE_NAMES]
        cached = self._loaded().get(property_id)
        return {
            "property_id": property_id,
            "model_type": MODEL_TYPE,
            "version": model.version,
            "timestamp": model.trained_at or version.get("created_at"),
            "num_features": len(features),
            "metrics": version.get("evaluation") or {},
            # The logit's coefficients by feature (a feature the artifact leaves out weighs 0).
            "feature_importance": {name: round(model.coefficients.get(name, 0.0), 6) for name in features},
            "checksum": "sha256:" + hashlib.sha256(canonical).hexdigest(),
            "loaded_at": (datetime.fromtimestamp(cached[1], UTC).isoformat() if cached and cached[0].version == model.version else None),
            "artifact_format": model.format,
            "training_outcomes": version.get("outcomes"),
        }


class OutcomeCatalog:
    """``/learn/outcomes/properties`` and ``/learn/outcomes/{id}/stats`` (IngestFunction)."""

    def __init__(self, outcomes: OutcomeStore):
        self.outcomes = outcomes

    def properties(self, limit: int | None, token: str | None) -> dict:
        size = page_size(limit)
        ids, last = paged(self.outcomes.outcome_properties_page, size, decode_token(token))
        return {"success": True, "count": len(ids), "properties": ids, "next_token": encode_token(last)}

    def stats(self, property_id: str) -> dict:
        if not self.outcomes.has_outcome_listing(property_id):
            raise NotFound(f"no outcomes stored for property {property_id}")
        n = accepted = finals = missing_final = missing_comp = missing_context = 0
        quoted_sum = final_sum = 0.0
        first = last = None
        for item in self.outcomes.outcome_stats_pages(property_id, STATS_MAX_OUTCOMES):
            n += 1
            accepted += bool(item.get("accepted"))
            quoted_sum += float(item.get("quoted_price") or 0.0)
            if item.get("final_price") is None:
                missing_final += 1
            else:
                finals += 1
                final_sum += float(item["final_price"])
            if item.get("comp_p50") is None and item.get("comp_p10") is None and item.get("comp_p90") is None:
                missing_comp += 1
            if not item.get("context"):
                missing_context += 1
            ts = item.get("timestamp")
            if ts:
                first = ts if first is None or ts < first else first
                last = ts if last is None or ts > last else last
        return {
            "success": True,
            "property_id": property_id,
            "stats": {
                "exists": n > 0,
                "total_records": n,
                "complete": n < STATS_MAX_OUTCOMES,
                "date_range": {"min": first, "max": last},
                "acceptance_rate": round(accepted / n, 6) if n else None,
                "avg_quoted_price": round(quoted_sum / n, 2) if n else None,
                "avg_final_price": round(final_sum / finals, 2) if finals else None,
                "data_quality": {
                    "missing_final_price": missing_final,
                    "missing_comp_bands": missing_comp,
                    "missing_context": missing_context,
                },
            },
        }
