"""Experiments as a product: create, list, stop, and read out from the attributed outcomes.

The experiments table is what the scorer assigns from (``ScoringService.experiments``, cached in
each container for ``EXPERIMENTS_CACHE_TTL_SECONDS``): a created experiment starts assigning,
and a stopped or expired one stops, within that time in every container (at once in the one
that served the stop). The readout tallies the outcomes whose quote ids name the experiment,
read from the outcomes table's sparse ``ExperimentOutcomes`` index, with the statistics of
``pricing.domain.experiments.readout``.

Raises ``NotFound`` for an unknown experiment and ``BadParameter`` for unusable input.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pricing.domain.experiments import CONTROL, QUOTE_ID_SEPARATOR, TREATMENT, ArmTally, experiment_from_record, parse_instant, readout
from pricing.domain.limits import is_property_id
from pricing.services.catalog import BadParameter, NotFound, decode_token, encode_token, page_size, paged
from pricing.storage import ConditionFailed
from pricing.storage.experiments import ExperimentStore
from pricing.storage.outcomes import OutcomeStore

DEFAULT_METRICS = ("conversion_rate", "adr", "revpar")
MAX_PROPERTIES_PER_EXPERIMENT = 1000


class ExperimentRequest(BaseModel):
    """What creates an experiment: the replaced service's query parameters, or the same as JSON."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=1024)
    start_date: str | None = Field(None, description="RFC 3339 date-time or YYYY-MM-DD; default now")
    end_date: str | None = Field(None, description="RFC 3339 date-time or YYYY-MM-DD; default open-ended")
    ml_traffic_percentage: float = Field(50.0, ge=0.0, le=100.0, allow_inf_nan=False)
    randomization_unit: Literal["user", "property"] = "user"
    property_ids: list[str] | None = Field(None, max_length=MAX_PROPERTIES_PER_EXPERIMENT)

    @field_validator("start_date", "end_date")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return parse_instant(value).isoformat()
        except ValueError:
            raise ValueError("must be an RFC 3339 date-time or a YYYY-MM-DD date") from None

    @field_validator("property_ids")
    @classmethod
    def _properties(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(is_property_id(p) for p in value):
            raise ValueError("every property id must be 1-128 characters of [A-Za-z0-9_.:-]")
        return sorted(set(value)) if value else None

    @model_validator(mode="after")
    def _dates_in_order(self) -> ExperimentRequest:
        if self.start_date and self.end_date and parse_instant(self.end_date) <= parse_instant(self.start_date):
            raise ValueError("end_date must be after start_date")
        return self


class ExperimentAdmin:
    def __init__(
        self,
        experiments: ExperimentStore,
        outcomes: OutcomeStore,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: "exp-" + uuid.uuid4().hex[:12],
    ):
        self.experiments = experiments
        self.outcomes = outcomes
        self._on_change = on_change  # the scorer's cache in this container forgets its experiments
        self._clock = clock
        self._new_id = new_id

    def create(self, request: ExperimentRequest) -> dict:
        now = self._clock()
        experiment_id = self._new_id()
        assert QUOTE_ID_SEPARATOR not in experiment_id  # quote ids carry it between separators
        record = {
            "experiment_id": experiment_id,
            "name": request.name,
            "description": request.description,
            "start_date": request.start_date or now.isoformat(),
            "end_date": request.end_date,
            "treatment_share": request.ml_traffic_percentage / 100.0,
            "unit": request.randomization_unit,
            "active": True,
            "property_ids": request.property_ids,
            "metrics": list(DEFAULT_METRICS),
            "created_at": now.isoformat(),
        }
        self.experiments.create_experiment(record)
        self._on_change()
        return {
            "success": True,
            "experiment_id": experiment_id,
            "message": f"Experiment {request.name!r} created: {request.ml_traffic_percentage:g}% of "
            f"{request.randomization_unit}s priced by the ML model, the rest by rules",
        }

    def view(self, record: dict) -> dict:
        experiment = experiment_from_record(record)
        return {
            "experiment_id": experiment.experiment_id,
            "name": record.get("name", experiment.experiment_id),
            "description": record.get("description", ""),
            "start_date": record.get("start_date"),
            "end_date": record.get("end_date"),
            "ml_traffic_percentage": round(experiment.treatment_share * 100, 4),
            "is_active": experiment.running_at(self._clock()),
            "stopped_at": record.get("stopped_at"),
            "randomization_unit": experiment.unit,
            "property_ids": sorted(experiment.property_ids) if experiment.property_ids else None,
            "metrics": list(record.get("metrics") or DEFAULT_METRICS),
        }

    def list(self, active_only: bool, limit: int | None, token: str | None) -> dict:
        items, last = paged(self.experiments.experiments_page, page_size(limit), decode_token(token))
        views = []
        for item in items:
            try:
                views.append(self.view(item))
            except (KeyError, TypeError, ValueError):
                continue  # a malformed record is reported by the scorer; it is no experiment
        if active_only:
            views = [v for v in views if v["is_active"]]
        views.sort(key=lambda v: v["start_date"] or "", reverse=True)
        return {"success": True, "count": len(views), "experiments": views, "next_token": encode_token(last)}

    def _record(self, experiment_id: str) -> dict:
        if not experiment_id or len(experiment_id) > 256:
            raise BadParameter("experiment_id", "experiment id must be 1-256 characters")
        record = self.experiments.get_experiment(experiment_id)
        if record is None:
            raise NotFound(f"no experiment {experiment_id}")
        return record

    def stop(self, experiment_id: str) -> dict:
        record = self._record(experiment_id)
        try:
            self.experiments.stop_experiment(experiment_id, self._clock().isoformat())
        except ConditionFailed:
            raise NotFound(f"no experiment {experiment_id}") from None
        self._on_change()
        was = "stopped" if record.get("active", True) else "already stopped"
        return {
            "success": True,
            "message": f"Experiment {experiment_id} {was}: it assigns no one from now on "
            "(every container within the experiments cache TTL)",
        }

    def results(self, experiment_id: str) -> dict:
        record = self._record(experiment_id)
        experiment = experiment_from_record(record)
        arms = {CONTROL: ArmTally(), TREATMENT: ArmTally()}
        for outcome in self.outcomes.experiment_outcomes(experiment_id):
            arm = arms.get(str(outcome.get("variant")))
            if arm is None:
                continue  # a caller-supplied variant that is neither arm
            price = outcome.get("final_price") or outcome.get("quoted_price") or 0.0
            arm.add(bool(outcome.get("accepted")), float(price))
        result: dict[str, Any] = readout(experiment_id, arms[CONTROL], arms[TREATMENT], experiment.treatment_share)
        result["is_active"] = experiment.running_at(self._clock())
        return {"success": True, "results": result}
