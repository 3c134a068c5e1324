"""Retraining: per property, measure drift, fit a candidate, and deploy it only if it is better.

``RetrainingService.retrain_property`` is one property's run, ending **deployed**, **rejected**,
**skipped** or **failed**; ``scheduled_run``, ``retrain_now`` and ``retrain_batch`` run many
(the function's entry point, ``pricing.api.retrain_app``, picks one per event). The steps, the
guards and why a candidate must win in revenue: docs/pricing-loop.md ("Retraining, step by
step"). Scoring containers pick a new model up when their cache entry expires
(``MODEL_CACHE_TTL_SECONDS``).

Environment (through ``pricing.settings``): ``RETRAIN_QUEUE_URL``, ``RETRAIN_BATCH_SIZE``, the
bucket and table names.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pricing.domain.conversion_model import ConversionModel, ModelFormatError
from pricing.domain.drift import MIN_DRIFT_SAMPLE, PSI_MODERATE, DriftReport, measure_drift
from pricing.domain.exploration import BOTH, next_direction
from pricing.domain.holdback import MAINTENANCE, ArmComparison, compare_strata, is_holdback, next_mode
from pricing.domain.holdback_win import with_win_bounds
from pricing.domain.limits import is_property_id
from pricing.domain.outcomes import FUTURE_SKEW, Outcome
from pricing.domain.policy_evaluation import PolicyLift, calibration, miscalibrated, model_policy, policy_lift, rules_policy
from pricing.domain.training import (
    Evaluation,
    Judgement,
    Prior,
    TrainingError,
    fit_conversion_model,
    insufficient_data,
    labels,
    outcome_features,
    predict,
    prior_from,
    split_holdout,
    train_and_judge,
)
from pricing.observability import metrics
from pricing.observability.context import logger
from pricing.observability.sentry import report_once
from pricing.settings import Settings
from pricing.storage import ConditionFailed, StorageUnavailable
from pricing.storage.artifacts import ArtifactStore
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.queue import MessageQueue
from pricing.storage.registry import PropertyRecord, Registry

DEPLOYED, REJECTED, SKIPPED, FAILED = "deployed", "rejected", "skipped", "failed"
MODEL_TYPE = "conversion"
#: Outcomes older than this describe a market the model should no longer learn from.
WINDOW_DAYS = 180
#: The newest outcomes kept for one fit: bounds memory and time for the busiest property.
MAX_TRAINING_OUTCOMES = 200_000
#: A live model is refitted once this share of its training sample has arrived since (and at
#: least ``MIN_NEW_OUTCOMES``): the loop keeps learning from its own exploration.
NEW_OUTCOMES_SHARE = 0.10
MIN_NEW_OUTCOMES = 100
#: Recency half-life of a candidate fitted after detected drift (else ``training`` chooses it).
DRIFT_HALF_LIFE_DAYS = 2.0
#: Recency half-life of the referee that judges a drifted live model against rules: it must see
#: the new market, so the days before the drift count little.
REFEREE_HALF_LIFE_DAYS = 2.0
#: A live model missing the bookings by more than this share is judged on the referee's point estimate.
GROSS_MISS = 0.30
#: The LIVE pointer's version after a rollback: rules price, and the next model learns only from
#: outcomes quoted since the timestamp (the estimated onset of the drift that broke the model).
ROLLBACK_PREFIX = "rules-since-"
_ROLLBACK_STAMP = "%Y%m%dT%H%M%SZ"
#: Stop starting new properties when less than this remains of the invocation.
TIME_RESERVE_MS = 60_000


class InvalidRetrainEvent(ValueError):
    """An event this function cannot act on (malformed property ids, a non-boolean force)."""


@dataclass(frozen=True)
class RetrainRequest:
    property_ids: tuple[str, ...] | None  # None: every property with outcomes
    force: bool = False
    as_of: datetime | None = None  # None: now


def parse_request(payload: Any) -> RetrainRequest:
    """``{"property_ids": [...], "force": bool, "as_of": "<ISO 8601 UTC>"}``, bare or under
    ``detail``; every key optional.

    ``as_of`` runs the retrain as of that moment instead of now (a replay, or a simulated
    clock): the window, the drift and guard periods, the model's ``trained_at`` and the
    registry's times are all measured from it, and outcomes quoted after it are not yet history.
    Raises ``InvalidRetrainEvent`` for anything else.
    """
    if isinstance(payload, dict) and isinstance(payload.get("detail"), dict):
        payload = payload["detail"]
    if not isinstance(payload, dict):
        raise InvalidRetrainEvent("the event is not a JSON object")
    force = payload.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRetrainEvent("force must be true or false")
    as_of = payload.get("as_of")
    if as_of is not None:
        parsed = _parse_utc(as_of) if isinstance(as_of, str) and ("Z" in as_of or "+" in as_of[10:]) else None
        if parsed is None:
            raise InvalidRetrainEvent("as_of must be an ISO 8601 timestamp with a time zone (2026-11-26T03:00:00Z)")
        as_of = parsed.astimezone(UTC)
    ids = payload.get("property_ids")
    if ids is None:
        return RetrainRequest(None, force, as_of)
    if not isinstance(ids, list) or not all(is_property_id(i) for i in ids):
        raise InvalidRetrainEvent("property_ids must be a list of property ids ([A-Za-z0-9_.:-], 1-128 chars, not only dots)")
    return RetrainRequest(tuple(dict.fromkeys(ids)), force, as_of)


@dataclass
class PropertyResult:
    """What happened to one property, with the figures behind it."""

    property_id: str
    status: str
    reason: str
    version: str | None = None
    live_version: str | None = None
    outcomes: int = 0
    positives: int = 0
    triggers: list[str] = field(default_factory=list)
    drift: dict | None = None
    evaluation: dict | None = None
    duration_seconds: float = 0.0
    transient: bool = False  # a failure a retry may fix (a store was unavailable)

    def as_dict(self) -> dict:
        return {
            "property_id": self.property_id,
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "live_version": self.live_version,
            "outcomes": self.outcomes,
            "positives": self.positives,
            "triggers": self.triggers,
            "drift": self.drift,
            "evaluation": self.evaluation,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def summarise(results: Sequence[PropertyResult]) -> dict:
    counts = Counter(r.status for r in results)
    return {status: counts.get(status, 0) for status in (DEPLOYED, REJECTED, SKIPPED, FAILED)}


def new_version(now: datetime, property_id: str, outcomes: Sequence[Outcome]) -> str:
    """Sortable by time, unique per property and data: ``20261126T030000Z-1a2b3c4d``."""
    newest = max(o.timestamp_utc for o in outcomes)
    digest = hashlib.sha256(f"{property_id}|{len(outcomes)}|{newest}|{now.isoformat()}".encode()).hexdigest()
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest[:8]}"


def artifact_key(property_id: str, version: str) -> str:
    """The S3 key of a model version. Only checked ids make keys: an id of dots (``..``) would
    be a dot segment, ``models/../<version>.json``, which HTTP clients and S3 tools resolve."""
    if not is_property_id(property_id):
        raise ValueError("not a property id")
    return f"models/{property_id}/{version}.json"


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _storable(value: Any) -> Any:
    """``value`` as plain JSON data with non-finite numbers as None (DynamoDB refuses NaN and
    infinity, and one odd figure must not lose the record of a whole model version)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _parse_utc(text: object) -> datetime | None:
    """A stored UTC timestamp (``...Z``, with or without fractions); None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def rollback_since(live_version: str | None) -> str | None:
    """The UTC timestamp (``Outcome.timestamp_utc`` form) a rollback version names, else None."""
    if not live_version or not live_version.startswith(ROLLBACK_PREFIX):
        return None
    try:
        since = datetime.strptime(live_version[len(ROLLBACK_PREFIX) :], _ROLLBACK_STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return _utc(since)


def relearning_since(model: ConversionModel) -> str | None:
    """When the outcomes a model relearning after a shift learns from begin (its prior's
    ``since``), else None: its refits keep to the new market, with the same prior."""
    prior = model.training.get("prior")
    since = prior.get("since") if isinstance(prior, dict) else None
    return since if isinstance(since, str) and _parse_utc(since) is not None else None


def _newest_disagree(holdout: Evaluation) -> bool:
    """Whether the holdout's bookings are clearly off what the fit of the older outcomes predicts."""
    expected = holdout.n * holdout.mean_predicted
    spread = math.sqrt(max(holdout.n * holdout.mean_predicted * (1 - holdout.mean_predicted), 1e-12))
    return miscalibrated((holdout.positives - expected) / spread, (holdout.positives - expected) / max(expected, 1e-12))


def drift_onset(model: ConversionModel, recent: Sequence[Outcome], overall: float | None = None) -> datetime:
    """When the model started to miss: the earliest quote day from which every day's bookings
    are off its predictions in the direction of the overall miss (``recent`` is time-ordered;
    ``overall``, the relative miss to walk back with, defaults to the miss over ``recent``)."""
    days: dict[str, list[Outcome]] = {}
    for o in recent:
        days.setdefault(o.timestamp.astimezone(UTC).strftime("%Y-%m-%d"), []).append(o)
    if overall is None:
        overall = calibration(predict(model, recent), labels(recent))[1]
    onset = min(days)
    for day in sorted(days, reverse=True):
        error = calibration(predict(model, days[day]), labels(days[day]))[1]
        if error * overall <= 0 or abs(error) < abs(overall) / 3:
            break
        onset = day
    return datetime.strptime(onset, "%Y-%m-%d").replace(tzinfo=UTC)


class RetrainingService:
    """Retrains properties: reads their outcomes, writes artifacts and registry records, and fans
    batches out to the queue (``pricing.storage``'s stores, or anything with their methods)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        artifacts: ArtifactStore,
        outcomes: OutcomeStore,
        queue: MessageQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.settings = settings
        self.registry = registry
        self.artifacts = artifacts
        self.outcomes = outcomes
        self.queue = queue
        self._clock = clock
        self._as_of: datetime | None = None

    def as_of(self, moment: datetime | None) -> RetrainingService:
        """This service with its clock stopped at ``moment`` (itself when None); its fan-out
        messages carry the moment on. Refuses a moment in the future (``InvalidRetrainEvent``)."""
        if moment is None:
            return self
        if moment > self._clock() + FUTURE_SKEW:
            raise InvalidRetrainEvent("as_of lies in the future")
        view = RetrainingService(self.settings, self.registry, self.artifacts, self.outcomes, self.queue, clock=lambda: moment)
        view._as_of = moment
        return view

    # -- one property -------------------------------------------------------------------------

    def _live_model(self, property_id: str) -> tuple[PropertyRecord, ConversionModel | None, str | None]:
        """(the registry's record, the live model if usable, why it is not usable)."""
        record = self.registry.get_property_record(property_id)
        if record.artifact_key is None:
            return record, None, None
        try:
            model = ConversionModel.from_artifact(self.artifacts.load_artifact(record.artifact_key))
        except (KeyError, ValueError, ModelFormatError) as exc:
            return record, None, f"live model {record.live_version} unusable: {exc}"
        return record, model, None

    def _holdback_guard(
        self,
        window: list[tuple[Outcome, datetime | None]],
        deployed_at: datetime,
        maintenance_since: datetime | None = None,
        chain_since: datetime | None = None,
    ) -> ArmComparison:
        """Realised revenue per quote of the live model's quotes against the rules holdback's,
        since the model went live (``pricing.domain.holdback``), stratified at the drop to the
        maintenance share when there was one. Quotes within the scoring cache's lifetime of the
        deploy may still have been priced by what it replaced: they do not count for the model.
        For the win, a refit deployed without drift (``chain_since``) is compared with the
        holdback's quotes since the first model of its line went live: rules priced them all, in
        a market no drift was seen in since (docs/pricing-loop.md, "A refit keeps the holdback's
        evidence")."""
        settled = deployed_at + timedelta(seconds=self.settings.model_cache_ttl_seconds)
        # Per period: model revenues, model prices, holdback revenues, holdback prices.
        strata: list[tuple[list[float], list[float], list[float], list[float]]] = [([], [], [], []), ([], [], [], [])]
        earlier: tuple[list[float], list[float]] = ([], [])  # the line's holdback before this deploy
        for o, _ in window:
            if o.timestamp < deployed_at:
                if chain_since is not None and chain_since <= o.timestamp and is_holdback(o.quote_id):
                    earlier[0].append(o.quoted_price if o.accepted else 0.0)
                    earlier[1].append(o.quoted_price)
                continue
            revenue = o.quoted_price if o.accepted else 0.0
            period = maintenance_since is not None and o.timestamp >= maintenance_since
            model_arm, model_prices, holdback_arm, holdback_prices = strata[period]
            if is_holdback(o.quote_id):
                holdback_arm.append(revenue)
                holdback_prices.append(o.quoted_price)
            elif o.timestamp >= settled:
                model_arm.append(revenue)
                model_prices.append(o.quoted_price)
        arms = compare_strata([(m, h) for m, _, h, _ in strata])
        if maintenance_since is not None:
            return arms  # the win is shown once per model; only the loss is still asked
        model_arm, model_prices, holdback_arm, holdback_prices = strata[0]
        return with_win_bounds(arms, model_arm, model_prices, earlier[0] + holdback_arm, earlier[1] + holdback_prices)

    def _holdback_share(self, result: PropertyResult, live: PropertyRecord, arms: ArmComparison, now: datetime) -> None:
        """The guard's nightly decision on the holdback share (``holdback.next_mode``), written
        to the LIVE pointer the scorer reads anyway, so no quote pays an extra read for it."""
        mode = next_mode(live.holdback_mode, arms)
        if result.evaluation is None:  # set with the guard's figures before this is called
            result.evaluation = {}
        guard = result.evaluation.setdefault("holdback_guard", {})
        guard["share"] = mode
        if mode == live.holdback_mode or mode != MAINTENANCE or live.live_version is None:
            return
        try:
            self.registry.set_holdback_mode(live.property_id, live.live_version, mode, _utc(now))
        except ConditionFailed:
            # A deploy meanwhile: the new model starts at the full share.
            guard["share"] = "full"
            return
        logger.info(
            "holdback share reduced",
            extra={"property_id": live.property_id, "version": live.live_version, "lower": arms.win_lower, "upper": arms.win_upper},
        )

    def _outcomes(self, property_id: str, now: datetime) -> tuple[list[tuple[Outcome, datetime | None]], int]:
        """The window's outcomes, oldest first, each with when it was stored; and how many
        records could not be read.

        Outcomes quoted after ``now`` are not history yet (a retrain ``as_of`` a past moment).
        A stored time after ``now`` is not on this run's timeline (an ``as_of`` replay of
        outcomes stored since): it is dropped, and the quote time alone says what a model saw.
        """
        since, until = _utc(now - timedelta(days=WINDOW_DAYS)), _utc(now)
        records = self.outcomes.read_outcomes(property_id, since)
        outcomes, unreadable = [], 0
        for record in records:
            try:
                outcome = Outcome.from_record(record)
            except (KeyError, TypeError, ValueError):
                unreadable += 1  # written by hand or by an older schema: not worth a failed run
                continue
            if outcome.timestamp_utc > until:
                continue
            stored = _parse_utc(record.get("ingested_at"))
            outcomes.append((outcome, stored if stored is not None and stored <= now else None))
        outcomes.sort(key=lambda pair: (pair[0].timestamp_utc, pair[0].key))
        return outcomes[-MAX_TRAINING_OUTCOMES:], unreadable

    @staticmethod
    def _unseen_by(model: ConversionModel, window: list[tuple[Outcome, datetime | None]]) -> list[Outcome]:
        """Outcomes the model cannot have trained on: quoted after its training data ends, or
        stored after it was trained (late reports of older quotes count too)."""
        data_end = str(model.training.get("data_end") or "")
        trained_at = _parse_utc(model.trained_at)
        return [
            o
            for o, stored in window
            if o.timestamp_utc > data_end or (trained_at is not None and stored is not None and stored > trained_at)
        ]

    def retrain_property(self, property_id: str, force: bool = False) -> PropertyResult:
        """Retrain one property (see the module docstring); raises what storage raises."""
        now = self._clock()
        live, incumbent, unusable = self._live_model(property_id)
        live_version, base_price = live.live_version, live.base_price
        window, unreadable = self._outcomes(property_id, now)
        # Rolled back after drift, or a model learning from a drift's onset on: what came before
        # describes a market that is gone -- but not its shape, which is the prior the next
        # model starts from (``prior_from``).
        since = rollback_since(live_version) if incumbent is None else relearning_since(incumbent)
        prior: Prior | None = None
        if since is not None:
            prior = prior_from([o for o, _ in window if o.timestamp_utc < since], since)
            window = [(o, stored) for o, stored in window if o.timestamp_utc >= since]
        outcomes = [o for o, _ in window]
        result = PropertyResult(
            property_id,
            SKIPPED,
            "",
            live_version=live_version,
            outcomes=len(outcomes),
            positives=sum(1 for o in outcomes if o.accepted),
        )
        if unreadable:
            logger.warning("unreadable outcome records skipped", extra={"property_id": property_id, "count": unreadable})
        too_few = insufficient_data(outcomes)
        if too_few:
            result.reason = f"not enough data: {too_few}" + (f" since the rollback ({since})" if since else "")
            return result

        drift: DriftReport | None = None
        onset: datetime | None = None
        lost: tuple[float, float, PolicyLift] | None = None  # the live model now loses to rules
        triggers = []
        if force:
            triggers.append("forced")
        if incumbent is None:
            triggers.append(unusable or "no live model")
        else:
            deployed_at = _parse_utc(live.deployed_at)
            if deployed_at is not None:
                # The guard in realised revenue: the bookings of the model's quotes against the
                # rules holdback's since it went live. The strongest evidence there is: acted on first.
                maintenance_since = _parse_utc(live.holdback_since) if live.holdback_mode == MAINTENANCE else None
                arms = self._holdback_guard(window, deployed_at, maintenance_since, _parse_utc(live.holdback_chain_since))
                result.evaluation = {"holdback_guard": arms.as_dict()}
                if arms.model_loses:
                    reason = (
                        f"rolled back to rule-based pricing: live model {incumbent.version} earned "
                        f"{arms.model_mean:.2f} per quote on {arms.model_quotes} quotes against "
                        f"{arms.holdback_mean:.2f} for the rules holdback on {arms.holdback_quotes} "
                        f"({arms.relative:+.1%}; 95% upper bound of the difference {arms.upper:+.2f}) "
                        f"since it went live on {deployed_at:%Y-%m-%d}; the next model learns from then on"
                    )
                    return self._to_rules(result, incumbent, now, deployed_at, reason)
                self._holdback_share(result, live, arms, now)
            recent = self._unseen_by(incumbent, window)
            drift = measure_drift(incumbent, recent)
            result.drift = drift.as_dict()
            if not drift.insufficient_sample:
                # The guard: does the live model still predict the bookings since they started to
                # go wrong, and if not, does it still earn more than rules would?
                onset = drift_onset(incumbent, recent)
                latest = [o for o in recent if o.timestamp >= onset]
                z, error = calibration(predict(incumbent, latest), labels(latest)) if latest else (0.0, 0.0)
                if len(latest) >= MIN_DRIFT_SAMPLE and miscalibrated(z, error):
                    guard = self._versus_rules(incumbent, outcomes, latest, base_price, property_id)
                    result.evaluation = {
                        **(result.evaluation or {}),
                        "rollback_guard": {
                            "calibration_z": round(z, 3),
                            "since": _utc(onset),
                            "calibration_error": round(error, 4),
                            **guard.as_dict(),
                        },
                    }
                    # Asymmetric on purpose: a model must prove it beats rules (a lower bound) to
                    # go live; once it grossly misses the bookings, the referee's best estimate
                    # that it earns less than rules is enough to fall back to them (else its bound).
                    if guard.upper < 0 or (guard.lift < 0 and abs(error) > GROSS_MISS):
                        lost = (z, error, guard)
                        recent = latest
                        if not drift.detected:
                            triggers.append(f"live model misses {error:+.0%} of the bookings since {onset:%Y-%m-%d}")
            triggers += drift.reasons() if drift.detected else []
            if drift.detected or drift.max_psi >= PSI_MODERATE:  # moderate: counted, not acted on
                metrics.track_drift(property_id=property_id, trigger_retrain=drift.detected)
            trained_on = int(incumbent.training.get("n") or 0)
            needed = max(MIN_NEW_OUTCOMES, math.ceil(NEW_OUTCOMES_SHARE * trained_on))
            if len(recent) >= needed:
                triggers.append(
                    f"{len(recent)} new outcomes since training, at least {needed} "
                    f"({NEW_OUTCOMES_SHARE:.0%} of the {trained_on} trained on)"
                )
        result.triggers = triggers
        if not triggers:
            detail = "insufficient recent sample" if drift and drift.insufficient_sample else f"max PSI {drift.max_psi:.3f}"
            result.reason = f"no drift ({detail}) and no new data to learn from"
            return result

        train_on = outcomes
        # After demand drift the old outcomes describe a market that is gone: a short memory.
        half_life = DRIFT_HALF_LIFE_DAYS if drift is not None and drift.detected else None
        if lost is not None:
            # The live model earns less than rules now: a replacement learns only from the drift's
            # onset on and must beat rules; without one, rules price while the loop relearns.
            train_on = [o for o in outcomes if o.timestamp >= onset]
            prior = prior_from([o for o in outcomes if o.timestamp < onset], _utc(onset))
            half_life = None
            if insufficient_data(train_on):
                return self._roll_back(result, incumbent, recent, now, onset, *lost)
        version = new_version(now, property_id, outcomes)
        result.version = version

        def judge(half_life_days: float | None) -> Judgement:
            return train_and_judge(
                train_on,
                incumbent,
                property_id=property_id,
                version=version,
                trained_at=_utc(now),
                base_price=base_price,
                half_life_days=half_life_days,
                against_rules=lost is not None,
                prior=prior,
            )

        market_moved = False  # the newest outcomes disagreed with the window, and a short memory won
        try:
            judgement = judge(half_life)
            relearned = None
            if not judgement.deploy and half_life is None and _newest_disagree(judgement.candidate_holdout):
                # The newest outcomes disagree with a fit of the whole window: the market moved
                # inside it (a property on rules has no live model to measure drift against).
                # A model of the outcomes since the move, with the prior of what came before,
                # gets one more chance -- else a short memory; either must pass the same judgement.
                if incumbent is None and prior is None:
                    relearned = self._relearn_since_shift(
                        train_on,
                        judgement.candidate_holdout,
                        property_id=property_id,
                        version=version,
                        trained_at=_utc(now),
                        base_price=base_price,
                    )
                if relearned is not None and relearned.deploy:
                    judgement = relearned
            if not judgement.deploy and half_life is None and _newest_disagree(judgement.candidate_holdout):
                retry = judge(DRIFT_HALF_LIFE_DAYS)
                if retry.deploy:
                    market_moved = True
                    judgement = replace(retry, reason=f"{retry.reason} (short memory: the newest outcomes disagreed with the whole window)")
        except TrainingError as exc:
            result.status, result.reason = FAILED, f"training failed: {exc}"
            return result
        # The guards' figures (holdback, rollback) stay beside the candidate's.
        result.evaluation = {**{k: v for k, v in (result.evaluation or {}).items() if k.endswith("_guard")}, **judgement.figures()}

        key = artifact_key(property_id, version)
        # Written before any pointer can name it: a crash from here on leaves an orphan file at
        # worst, never a LIVE record pointing at nothing.
        self.artifacts.put_artifact(key, judgement.candidate.to_artifact())
        record = {
            "artifact_key": key,
            "status": "pending" if judgement.deploy else REJECTED,
            "reason": judgement.reason,
            "created_at": _utc(now),
            "incumbent_version": live_version,
            "triggers": triggers,
            "evaluation": result.evaluation,
            "drift": result.drift,
            "outcomes": len(outcomes),
            "positives": result.positives,
        }
        self.registry.put_model_record(property_id, version, _storable(record))
        if not judgement.deploy and lost is not None:
            self.registry.set_model_status(property_id, version, REJECTED, judgement.reason)
            return self._roll_back(result, incumbent, recent, now, onset, *lost, replacement=f"candidate {version} {judgement.reason}")
        if not judgement.deploy:
            result.status, result.reason = REJECTED, judgement.reason
            if incumbent is None:
                self._direct_exploration(result, live, judgement, now)
            return result
        # A refit of a live model keeps its line's holdback evidence while nothing says the market
        # moved: not the market features (PSI), not the bookings since an onset (the rollback
        # guard's miss), not the newest outcomes against the window. A first model, a model after
        # a rollback and a replacement of a loser start anew. (A model's log loss rising from its
        # training fit alone does not: a refit of a young model is often triggered by it.)
        moved = market_moved or bool(drift and drift.drifted_features) or "rollback_guard" in (result.evaluation or {})
        chain_since = None
        if incumbent is not None and lost is None and not moved and live.deployed_at:
            chain_since = live.holdback_chain_since or live.deployed_at
        try:
            self.registry.swap_live_model(
                property_id, version, key, expected_version=live_version, deployed_at=_utc(now), holdback_chain_since=chain_since
            )
        except ConditionFailed:
            reason = "the live model changed during this run (a concurrent retrain deployed first)"
            self.registry.set_model_status(property_id, version, "superseded", reason)
            result.reason = reason
            return result
        self.registry.set_model_status(property_id, version, DEPLOYED, judgement.reason)
        result.status, result.reason = DEPLOYED, judgement.reason
        return result

    def _direct_exploration(self, result: PropertyResult, live: PropertyRecord, judgement: Judgement, now: datetime) -> None:
        """Rules keep pricing: point their exploration to the side where the refused candidate
        would price, so tomorrow's outcomes test what it could not prove (docs/pricing-loop.md,
        "Directed while rules price"). A candidate without a side keeps the direction there is;
        one pointing the other way turns it."""
        direction = next_direction(judgement.revenue.direction if judgement.revenue is not None else BOTH, live.exploration_in_force())
        if direction != BOTH:
            self.registry.set_exploration_direction(
                result.property_id, direction, live.live_version, live.base_price, _utc(now), result.version or ""
            )
        result.evaluation = {**(result.evaluation or {}), "exploration_direction": direction}

    @staticmethod
    def _relearn_since_shift(outcomes: list[Outcome], holdout: Evaluation, **judge_args) -> Judgement | None:
        """A judged model of the outcomes since the demand of a property on rules shifted, with
        the prior of the outcomes before (``prior_from``); None when no onset can be placed
        inside the window or the outcomes since are too few.

        The onset is found as for a live model (``drift_onset``): a fit of the older part of the
        window is the reference, and the days are walked back while they miss in the direction
        the newest outcomes do.
        """
        older = split_holdout(outcomes)[0]
        reference, _ = fit_conversion_model(older, property_id="", version="reference", trained_at="")
        expected = holdout.n * holdout.mean_predicted
        onset = drift_onset(reference, outcomes, (holdout.positives - expected) / max(expected, 1e-12))
        since = [o for o in outcomes if o.timestamp >= onset]
        if len(since) == len(outcomes) or insufficient_data(since):
            return None
        prior = prior_from([o for o in outcomes if o.timestamp < onset], _utc(onset))
        if prior is None:
            return None
        judgement = train_and_judge(since, None, prior=prior, **judge_args)
        return replace(
            judgement,
            reason=f"{judgement.reason} (learning from {onset:%Y-%m-%d} on, when the newest "
            f"outcomes began to disagree with the window, with a prior of the "
            f"{len(outcomes) - len(since)} outcomes before)",
        )

    @staticmethod
    def _versus_rules(
        incumbent: ConversionModel, outcomes: list[Outcome], recent: list[Outcome], base_price: float | None, property_id: str
    ) -> PolicyLift:
        """The live model's revenue lift over rules on the recent quotes, judged by a referee
        fitted to the whole window with a short memory (``REFEREE_HALF_LIFE_DAYS``)."""
        referee, fit = fit_conversion_model(
            outcomes, property_id=property_id, version="referee", trained_at="", half_life_days=REFEREE_HALF_LIFE_DAYS
        )
        return policy_lift(
            referee, fit.w, fit.covariance(), recent, model_policy(incumbent, base_price), rules_policy(base_price), outcome_features
        )

    def _roll_back(
        self,
        result: PropertyResult,
        incumbent: ConversionModel,
        recent: list[Outcome],
        now: datetime,
        onset: datetime,
        z: float,
        error: float,
        guard: PolicyLift,
        replacement: str | None = None,
    ) -> PropertyResult:
        """Point LIVE at rule-based pricing: the live model no longer predicts bookings, and a
        model of the newest data says it now earns less than rules would.

        Rules are what every model had to beat, so they are the safe place to wait while the
        loop relearns -- from the drift's onset on only (``ROLLBACK_PREFIX``).
        """
        reason = (
            f"rolled back to rule-based pricing: live model {incumbent.version} predicted "
            f"{1 / (1 + error) if error > -1 else float('inf'):.2f}x the bookings that happened on {len(recent)} "
            f"recent quotes (z={z:+.2f}) and earns {guard.lift:+.1%} against rules there (90% interval "
            f"{guard.lower:+.1%} to {guard.upper:+.1%}); the next model learns from {onset:%Y-%m-%d} on"
            + (f" ({replacement})" if replacement else f" ({len(recent)} outcomes so far)")
        )
        return self._to_rules(result, incumbent, now, onset, reason)

    def _to_rules(self, result: PropertyResult, incumbent: ConversionModel, now: datetime, since: datetime, reason: str) -> PropertyResult:
        """Point LIVE at rules, learning from ``since`` on; the rolled-back model's record says why."""
        property_id = result.property_id
        version = ROLLBACK_PREFIX + since.strftime(_ROLLBACK_STAMP)
        try:
            self.registry.swap_live_model(property_id, version, None, expected_version=result.live_version, deployed_at=_utc(now))
        except ConditionFailed:
            result.reason = "the live model changed during this run (a concurrent retrain deployed first)"
            return result
        self.registry.set_model_status(property_id, incumbent.version, "rolled_back", reason)
        metrics.track_rollback(property_id=property_id)
        logger.warning("model rolled back", extra={"property_id": property_id, "version": incumbent.version})
        result.status, result.reason, result.version = DEPLOYED, reason, version
        return result

    def _guarded(self, property_id: str, force: bool) -> PropertyResult:
        started = time.perf_counter()
        try:
            result = self.retrain_property(property_id, force)
        except Exception as exc:  # noqa: BLE001 - one property's failure must never stop the others
            transient = isinstance(exc, StorageUnavailable)
            report_once(f"retrain_failed:{type(exc).__name__}", exc, property_id=property_id)
            logger.exception("retrain failed", extra={"property_id": property_id})
            result = PropertyResult(property_id, FAILED, f"{type(exc).__name__}: {exc}", transient=transient)
        result.duration_seconds = time.perf_counter() - started
        metrics.track_retraining(property_id=property_id, model_type=MODEL_TYPE, status=result.status, duration=result.duration_seconds)
        logger.info(
            "retrain result",
            extra={
                k: v
                for k, v in result.as_dict().items()
                if k in ("property_id", "status", "reason", "version", "outcomes", "duration_seconds")
            },
        )
        return result

    # -- many properties ----------------------------------------------------------------------

    def run(
        self, property_ids: Sequence[str], force: bool, remaining_ms: Callable[[], int] | None = None
    ) -> tuple[list[PropertyResult], list[str]]:
        """Retrain ``property_ids`` in order until the invocation's time runs low.

        Returns (results, the ids not started for lack of time).
        """
        results: list[PropertyResult] = []
        for position, property_id in enumerate(property_ids):
            if remaining_ms is not None and remaining_ms() < TIME_RESERVE_MS:
                return results, list(property_ids[position:])
            results.append(self._guarded(property_id, force))
        return results, []

    def fan_out(self, property_ids: Sequence[str], force: bool) -> int:
        """Enqueue ``property_ids`` in messages of ``RETRAIN_BATCH_SIZE``; returns the message count."""
        size = self.settings.retrain_batch_size
        extra = {} if self._as_of is None else {"as_of": _utc(self._as_of)}
        bodies = [{"property_ids": list(property_ids[i : i + size]), "force": force, **extra} for i in range(0, len(property_ids), size)]
        self.queue.enqueue_messages(self.settings.retrain_queue_url, bodies)
        return len(bodies)

    def retrain_now(self, ids: Sequence[str], force: bool, remaining_ms=None) -> dict:
        """Retrain ``ids`` in this invocation, with the per-property results; what time did not
        allow goes to the queue (when there is one) and is listed as ``not_started``."""
        results, deferred = self.run(ids, force, remaining_ms)
        answer: dict[str, Any] = {"results": [r.as_dict() for r in results], "summary": summarise(results)}
        if deferred:
            if self.settings.retrain_queue_url:
                answer["deferred_batches"] = self.fan_out(deferred, force)
            answer["not_started"] = deferred
        return answer

    def scheduled_run(self, force: bool, remaining_ms=None) -> dict:
        """Every property with outcomes: fanned out to the queue, or inline without one."""
        property_ids = self.outcomes.list_outcome_properties()
        if self.settings.retrain_queue_url:
            batches = self.fan_out(property_ids, force)
            logger.info("retrain fanned out", extra={"properties": len(property_ids), "batches": batches})
            return {"mode": "fan_out", "properties": len(property_ids), "batches": batches}
        return {"mode": "inline", "properties": len(property_ids), **self.retrain_now(property_ids, force, remaining_ms)}

    def retrain_batch(self, request: RetrainRequest, remaining_ms=None) -> list[PropertyResult]:
        """One queued batch: its properties retrained until time runs low, the rest queued again
        as a new batch (this one is then done). Whether the batch is worth retrying:
        ``worth_retrying``."""
        ids = list(request.property_ids or ())
        results, deferred = self.run(ids, request.force, remaining_ms)
        if deferred:
            self.fan_out(deferred, request.force)
        logger.info("retrain batch done", extra={"properties": len(ids), "deferred": len(deferred), **summarise(results)})
        return results


def worth_retrying(results: Sequence[PropertyResult]) -> bool:
    """True when a property failed because a store was unavailable: the store may recover, and a
    retry is harmless (properties deployed meanwhile come out "skipped", with no drift against a
    model trained moments ago)."""
    return any(r.status == FAILED and r.transient for r in results)
