"""An in-memory stand-in for ``pricing.storage``'s registry, artifact, experiment and outcome
stores in one object (passed as each of them): the methods scoring, ingestion and retraining
call, with the same semantics (conditional live-pointer swap, immutable versions,
idempotent outcome keys), on a simulated clock.

The closed-loop benchmark runs thousands of quotes and a dozen nightly retrains per curve; moto
would add minutes of HTTP and serialisation and nothing the loop's behaviour depends on. The
services above this class are the real ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pricing.storage import ConditionFailed
from pricing.storage.registry import PropertyRecord


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MemoryStorage:
    def __init__(self, clock: Callable[[], datetime]):
        self._clock = clock
        self.base_prices: dict[str, float] = {}
        self.live: dict[str, dict] = {}
        self.models: dict[tuple[str, str], dict] = {}
        self.artifacts: dict[str, Any] = {}
        self.outcomes: dict[str, dict[str, dict]] = {}
        self.experiments: list[dict] = []
        self.explore: dict[str, dict] = {}

    # -- registry: read side (scoring) ----------------------------------------------------

    def get_property_record(self, property_id: str) -> PropertyRecord:
        live, explore = self.live.get(property_id, {}), self.explore.get(property_id, {})
        return PropertyRecord(
            property_id,
            self.base_prices.get(property_id),
            live.get("version"),
            live.get("artifact_key"),
            live.get("deployed_at"),
            live.get("holdback_mode"),
            live.get("holdback_since"),
            live.get("holdback_chain_since"),
            explore.get("direction", 0),
            explore.get("live_version"),
            explore.get("base_price"),
        )

    def load_artifact(self, key: str) -> Any:
        return copy.deepcopy(self.artifacts[key])

    def list_experiments(self) -> list[dict]:
        return list(self.experiments)

    def put_property_config(self, property_id: str, base_price: float) -> None:
        self.base_prices[property_id] = base_price

    # -- outcomes ---------------------------------------------------------------------------

    def existing_outcome_keys(self, keys: list[tuple[str, str]], **_: Any) -> set[tuple[str, str]]:
        return {(p, k) for p, k in keys if k in self.outcomes.get(p, {})}

    def write_outcomes(self, records: list[dict], **_: Any) -> None:
        now = _utc(self._clock())
        for record in records:
            self.outcomes.setdefault(record["property_id"], {})[record["outcome_key"]] = {**record, "ingested_at": now}

    def put_new_outcomes(self, records: list[dict], *, write_id: str, **_: Any) -> list[str]:
        """Each record stored unless its key is (``OutcomeStore.put_new_outcomes``' statuses)."""
        from pricing.storage.outcomes import DUPLICATE, STORED

        now = _utc(self._clock())
        statuses = []
        for record in records:
            stored = self.outcomes.setdefault(record["property_id"], {})
            if record["outcome_key"] in stored:
                statuses.append(DUPLICATE)
            else:
                stored[record["outcome_key"]] = {**record, "ingested_at": now, "write_id": write_id}
                statuses.append(STORED)
        return statuses

    def list_outcome_properties(self) -> list[str]:
        return sorted(self.outcomes)

    def read_outcomes(self, property_id: str, since: str, limit: int | None = None) -> list[dict]:
        return [dict(r) for r in self.outcomes.get(property_id, {}).values() if r["timestamp"] >= since]

    # -- registry: versions and the live pointer (retraining) -----------------------------

    def put_artifact(self, key: str, document: dict) -> None:
        self.artifacts[key] = copy.deepcopy(document)

    def put_model_record(self, property_id: str, version: str, record: dict) -> None:
        if (property_id, version) in self.models:
            raise ConditionFailed(f"model version {version} exists")
        self.models[(property_id, version)] = {**record, "version": version}

    def set_model_status(self, property_id: str, version: str, status: str, reason: str) -> None:
        self.models[(property_id, version)].update(status=status, reason=reason)

    def list_model_records(self, property_id: str) -> list[dict]:
        return [dict(r) for (p, _), r in self.models.items() if p == property_id]

    def swap_live_model(self, property_id, version, artifact_key, expected_version, deployed_at, holdback_chain_since=None) -> None:
        if self.live.get(property_id, {}).get("version") != expected_version:
            raise ConditionFailed("the live model changed")
        self.live[property_id] = {
            "version": version,
            "artifact_key": artifact_key,
            "deployed_at": deployed_at,
            "previous_version": expected_version,
        }
        if holdback_chain_since is not None:
            self.live[property_id]["holdback_chain_since"] = holdback_chain_since

    def set_holdback_mode(self, property_id, version, mode, since) -> None:
        if self.live.get(property_id, {}).get("version") != version:
            raise ConditionFailed("the live model changed")
        self.live[property_id].update(holdback_mode=mode, holdback_since=since)

    def set_exploration_direction(self, property_id, direction, live_version, base_price, since, version) -> None:
        self.explore[property_id] = {
            "direction": direction,
            "live_version": live_version,
            "base_price": base_price,
            "since": since,
            "candidate_version": version,
        }

    def enqueue_messages(self, queue_url: str, bodies: list[dict]) -> None:
        raise NotImplementedError("the benchmark retrains inline")
