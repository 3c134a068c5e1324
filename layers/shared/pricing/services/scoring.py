"""The /score use case: gather a quote's inputs from storage and the market, then let the domain price it.

What lives per container (module-level in the app, so it survives warm invocations):

* a property cache (live model + base price) with a TTL, so a warm container prices without I/O
  and picks up a newly deployed model within ``MODEL_CACHE_TTL_SECONDS``; a property without a
  model is looked up again after ``MODEL_CACHE_NEGATIVE_TTL_SECONDS`` (15 s), so its first model
  prices within seconds of its deploy, not minutes;
* the running experiments, refreshed every ``EXPERIMENTS_CACHE_TTL_SECONDS`` (settings, default
  60 s): an experiment created, stopped or past its end date changes assignment within that time
  (at once in the container that served the change: ``forget_experiments``);
* the competitor client's own cache.

No failure of a store or of the competitor backend fails a quote: the price is then made by
rules (or without competitor prices), and the reasons say so.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from pricing.competitors import CompetitorClient
from pricing.domain.conversion_model import ConversionModel, ModelFormatError
from pricing.domain.experiments import NO_EXPERIMENT, Assignment, Experiment, assign, experiment_from_record, quote_id_for
from pricing.domain.pricing import ML, Recommendation, recommend
from pricing.domain.quote import CompetitorSnapshot, Quote
from pricing.observability import metrics
from pricing.observability.context import logger
from pricing.observability.sentry import report_once, set_request_context
from pricing.settings import Settings
from pricing.storage import StorageUnavailable
from pricing.storage.registry import PropertyRecord

#: After a store failure, the same property is not retried for this long (rules price meanwhile).
FAILURE_BACKOFF_SECONDS = 5.0
MAX_CACHED_PROPERTIES = 5_000
NOT_IN_EXPERIMENT = Assignment(None, NO_EXPERIMENT)


# What scoring reads, and all it may do with the stores: the latency path never writes. The
# composition root hands it the registry, artifact and experiment stores, which have these.
class LivePointers(Protocol):
    def get_property_record(self, property_id: str) -> PropertyRecord: ...


class Artifacts(Protocol):
    def load_artifact(self, key: str) -> Any: ...


class ExperimentList(Protocol):
    def list_experiments(self) -> list[dict[str, Any]]: ...


class Scored(NamedTuple):
    """A priced quote: the quote as priced (with the competitor data fetched for it) and its price."""

    quote: Quote
    recommendation: Recommendation


@dataclass(frozen=True)
class PropertyState:
    model: ConversionModel | None
    base_price: float | None
    why_no_model: str | None = None
    holdback_mode: str | None = None  # the guard's decision for the live model (LIVE record)
    exploration_direction: int = 0  # while rules price: the retrain's direction (EXPLORE record)


class PropertyCache:
    """Live model and configuration per property, each entry valid until its own deadline.

    An entry without a model lives ``negative_ttl_seconds`` at most: "no model" is the answer
    most likely to change soon (a first model, a redeploy after a rollback), and re-reading one
    registry item every few seconds per property costs far less than pricing by rules for
    ``ttl_seconds`` after the model is live.
    """

    def __init__(self, ttl_seconds: float, clock: Callable[[], float], negative_ttl_seconds: float | None = None):
        self.ttl_seconds = ttl_seconds
        self.negative_ttl_seconds = ttl_seconds if negative_ttl_seconds is None else min(negative_ttl_seconds, ttl_seconds)
        self._clock = clock
        self._entries: dict[str, tuple[float, PropertyState]] = {}
        self._loaded_at: dict[str, float] = {}  # wall-clock time of each entry, for /model/metrics
        self._lock = threading.Lock()

    def get(self, property_id: str) -> PropertyState | None:
        with self._lock:
            entry = self._entries.get(property_id)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, property_id: str, state: PropertyState, ttl: float | None = None) -> None:
        with self._lock:
            if len(self._entries) >= MAX_CACHED_PROPERTIES and property_id not in self._entries:
                # Evict the entry closest to expiry: a flood of unknown ids cannot grow memory.
                evicted = min(self._entries, key=lambda k: self._entries[k][0])
                del self._entries[evicted]
                self._loaded_at.pop(evicted, None)
            if ttl is None:
                ttl = self.ttl_seconds if state.model is not None else self.negative_ttl_seconds
            self._entries[property_id] = (self._clock() + ttl, state)
            self._loaded_at[property_id] = time.time()
            metrics.set_models_loaded(sum(1 for _, s in self._entries.values() if s.model is not None))

    def models(self) -> dict[str, tuple[ConversionModel, float]]:
        """The models this container holds now: property id -> (model, when it was loaded, epoch s)."""
        now = self._clock()
        with self._lock:
            return {
                pid: (state.model, self._loaded_at.get(pid, 0.0))
                for pid, (deadline, state) in self._entries.items()
                if state.model is not None and deadline > now
            }

    @property
    def models_loaded(self) -> int:
        with self._lock:
            return sum(1 for _, s in self._entries.values() if s.model is not None)


class ScoringService:
    def __init__(
        self,
        settings: Settings,
        registry: LivePointers,
        artifacts: Artifacts,
        experiments: ExperimentList,
        competitors: CompetitorClient,
        clock: Callable[[], float] = time.monotonic,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ):
        self.settings = settings
        self.registry = registry
        self.artifacts = artifacts
        self.experiment_store = experiments
        self.competitors = competitors
        self.cache = PropertyCache(settings.model_cache_ttl_seconds, clock, settings.model_cache_negative_ttl_seconds)
        self._clock = clock
        self._new_token = new_token
        self._experiments: tuple[float, list[Experiment]] = (float("-inf"), [])

    # -- inputs -----------------------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        expires, current = self._experiments
        if expires > self._clock():
            return current
        try:
            records = self.experiment_store.list_experiments()
            parsed = []
            for record in records:
                try:
                    parsed.append(experiment_from_record(record))
                except (KeyError, TypeError, ValueError) as exc:
                    report_once("experiment_malformed", f"malformed experiment record: {exc}")
            # Stopped, not yet started and ended experiments assign no one: dropped here, so an
            # end date takes effect within the cache TTL.
            now = datetime.now(UTC)
            parsed = [e for e in parsed if e.running_at(now)]
            self._experiments = (self._clock() + self.settings.experiments_cache_ttl_seconds, parsed)
            return parsed
        except StorageUnavailable as exc:
            # Keep the last known experiments (or none); try again after the backoff.
            report_once("experiments_store_unavailable", exc)
            self._experiments = (self._clock() + FAILURE_BACKOFF_SECONDS, current)
            return current

    def forget_experiments(self) -> None:
        """Read the experiments afresh on the next quote (one was created or stopped here)."""
        self._experiments = (float("-inf"), [])

    def property_state(self, property_id: str) -> PropertyState:
        cached = self.cache.get(property_id)
        if cached is not None:
            metrics.track_cache_hit()
            return cached
        metrics.track_cache_miss()
        try:
            record = self.registry.get_property_record(property_id)
        except StorageUnavailable as exc:
            report_once("model_store_unavailable", exc)
            logger.warning("model store unavailable", extra={"property_id": property_id, "error": str(exc)})
            state = PropertyState(None, None, "model store unavailable")
            self.cache.put(property_id, state, ttl=FAILURE_BACKOFF_SECONDS)
            return state
        model, why = None, None
        if record.artifact_key is None and (record.live_version or "").startswith("rules-since-"):
            why = f"the live model was rolled back to rules after demand drift ({record.live_version})"
        elif record.artifact_key is None:
            why = "no model deployed for this property"
        else:
            try:
                model = ConversionModel.from_artifact(self.artifacts.load_artifact(record.artifact_key))
            except StorageUnavailable as exc:
                report_once("model_store_unavailable", exc)
                state = PropertyState(None, record.base_price, "model store unavailable")
                self.cache.put(property_id, state, ttl=FAILURE_BACKOFF_SECONDS)
                return state
            except (KeyError, ValueError, ModelFormatError) as exc:
                report_once("model_artifact_unusable", f"{record.artifact_key}: {exc}", property_id=property_id)
                why = f"model {record.live_version} is unusable"
        # The direction is for rules pricing: a model voids it.
        direction = record.exploration_in_force() if model is None else 0
        state = PropertyState(model, record.base_price, why, record.holdback_mode, direction)
        self.cache.put(property_id, state)
        return state

    def competitor_data(self, quote: Quote, request_id: str | None) -> CompetitorSnapshot | None:
        """The caller's competitor prices, else the backend's (when wanted and configured)."""
        given = quote.competitors
        if given is not None or not quote.toggles.use_competitors or not self.competitors.enabled:
            return given
        property_id = quote.property_id
        fetched = self.competitors.fetch(property_id, quote.stay_date, request_id)
        if not fetched.cached:
            staleness = fetched.snapshot.staleness_seconds if fetched.snapshot else None
            metrics.track_competitor_fetch(property_id=property_id, status=fetched.status, staleness_seconds=staleness)
            if fetched.status not in ("success", "not_found"):
                report_once(f"competitor_backend_{fetched.status}", f"competitor backend: {fetched.status}")
        return fetched.snapshot

    # -- the use case -------------------------------------------------------------------------

    def score(self, quote: Quote, request_id: str | None = None, *, synthetic: bool = False) -> Scored:
        """Price one validated quote (its ``competitors``: the caller's, if any).

        ``synthetic`` marks the scheduled canary: it runs the whole path (stores, model, pricing)
        but is not a customer quote, so it joins no experiment and stays out of the /score
        latency and A/B figures that alerts and experiment readouts are computed from.
        """
        started = time.perf_counter()
        property_id, user_id = quote.property_id, quote.user_id
        set_request_context(request_id, user_id=user_id, property_id=property_id)
        competitors = self.competitor_data(quote, request_id)
        if competitors is not quote.competitors:
            quote = dataclasses.replace(quote, competitors=competitors)
        assignment = NOT_IN_EXPERIMENT if synthetic else assign(self.experiments(), property_id, user_id)
        if assignment.experiment_id is not None:
            metrics.track_ab_assignment(experiment_id=assignment.experiment_id, variant=assignment.variant)
        state = self.property_state(property_id)
        predicted_at = time.perf_counter()
        result = recommend(
            quote,
            quote_id=quote_id_for(self._new_token(), assignment),
            assignment=assignment,
            model=state.model,
            configured_base=state.base_price,
            fallback_reason=state.why_no_model,
            exploration_rate=0.0 if synthetic else self.settings.exploration_rate_for(property_id),
            holdback_rate=0.0 if synthetic else self.settings.holdback_rate_for(property_id, state.holdback_mode),
            exploration_direction=state.exploration_direction if self.settings.exploration_directed else 0,
        )
        if synthetic:
            return Scored(quote, result)
        if result.pricing_method == ML:
            metrics.track_model_prediction(property_id=property_id, model_type="conversion", duration=time.perf_counter() - predicted_at)
        metrics.track_exploration(pricing_method=result.pricing_method, explored=result.exploration.explored)
        metrics.track_score_request(pricing_method=result.pricing_method, duration=time.perf_counter() - started)
        return Scored(quote, result)

    def health(self) -> dict:
        return {
            "status": "healthy",
            "model_loaded": self.cache.models_loaded > 0,
            "timestamp": datetime.now(UTC).isoformat(),
            "version": self.settings.release,
        }
