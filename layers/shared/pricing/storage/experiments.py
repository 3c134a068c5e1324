"""A/B experiments (DynamoDB, key ``experiment_id``): one small item per experiment ever created.

The outcomes attributed to an experiment live with the outcomes (``OutcomeStore.experiment_outcomes``).
"""

from __future__ import annotations

from typing import Any

from pricing.storage.aws import AwsClients, Item, Page, Table
from pricing.storage.errors import StoreRefused


class ExperimentStore:
    def __init__(self, aws: AwsClients, table: str):
        self.table = Table(aws, table)

    def list_experiments(self) -> list[Item]:
        """Every experiment (scoring reads them all, then caches them)."""
        return self.table.scan_all()

    def experiments_page(self, limit: int, start_key: Item | None = None) -> Page:
        """One page of experiments and the cursor to the next (None: done)."""
        if start_key is not None and not (isinstance(start_key.get("experiment_id"), dict) and len(start_key) == 1):
            raise StoreRefused("experiments: not a cursor of this list")
        return self.table.page("scan", limit, start_key)

    def get_experiment(self, experiment_id: str) -> Item | None:
        return self.table.get({"experiment_id": experiment_id}, ConsistentRead=True)

    def create_experiment(self, experiment: dict[str, Any]) -> None:
        """Store a new experiment; ``ConditionFailed`` when its id exists."""
        self.table.put(experiment, ConditionExpression="attribute_not_exists(experiment_id)")

    def put_experiment(self, experiment: dict[str, Any]) -> None:
        """Store ``experiment`` whether or not its id exists (seeding)."""
        self.table.put(experiment)

    def stop_experiment(self, experiment_id: str, stopped_at: str) -> None:
        """Mark the experiment inactive; ``ConditionFailed`` when there is no such experiment."""
        self.table.update(
            {"experiment_id": experiment_id},
            UpdateExpression="SET active = :f, stopped_at = if_not_exists(stopped_at, :t)",
            ConditionExpression="attribute_exists(experiment_id)",
            values={":f": False, ":t": stopped_at},
        )
