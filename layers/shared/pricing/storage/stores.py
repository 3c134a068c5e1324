"""Every store over one set of clients: for seeding, benchmarks and tests, which touch them all.

The functions' composition roots build only the stores their services take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pricing.settings import Settings
from pricing.storage.artifacts import ArtifactStore
from pricing.storage.aws import AwsClients
from pricing.storage.experiments import ExperimentStore
from pricing.storage.outcomes import OutcomeStore
from pricing.storage.queue import MessageQueue
from pricing.storage.registry import Registry


@dataclass(frozen=True)
class Stores:
    aws: AwsClients
    registry: Registry
    artifacts: ArtifactStore
    experiments: ExperimentStore
    outcomes: OutcomeStore
    queue: MessageQueue

    @classmethod
    def build(
        cls, settings: Settings, *, latency_critical: bool = False, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> Stores:
        aws = AwsClients(latency_critical=latency_critical)
        return cls(
            aws,
            Registry(aws, settings.registry_table),
            ArtifactStore(aws, settings.artifacts_bucket),
            ExperimentStore(aws, settings.experiments_table),
            OutcomeStore(aws, settings.outcomes_table, clock),
            MessageQueue(aws),
        )
