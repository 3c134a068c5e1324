"""What the benchmarks run against: a moto server holding the template's resources with a deployed
model, a real Pushgateway, and the /score requests and events they send.

Everything listens on 127.0.0.1 on free ports and is stopped on exit; nothing here touches the
default ports of the machine's own Prometheus services.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import ROOT
from local.services import MotoServer, create_resources
from local.template import SamTemplate
from pricing.domain.conversion_model import ConversionModel
from pricing.settings import Settings
from pricing.storage.stores import Stores

REGION = "us-east-1"
BENCH_PROPERTY = "bench-prop-1"
BENCH_USER = "bench-user"
MODEL_VERSION = "bench-v1"
LOG_DIR = ROOT / ".run" / "bench"

# A plausible fitted model: conversion falls with price, rises with lead time and occupancy.
BENCH_MODEL = ConversionModel(
    property_id=BENCH_PROPERTY,
    version=MODEL_VERSION,
    coefficients={
        "intercept": 2.2,
        "price_ratio": -3.1,
        "lead_scaled": 0.15,
        "occupancy": 0.8,
        "weekend": 0.2,
        "refundable": 0.1,
        "los_scaled": -0.05,
    },
    reference_price=120.0,
    price_range=(60.0, 260.0),
    trained_at="2026-01-01T00:00:00Z",
)


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` for the duration, then restored exactly."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def score_body(property_id: str = BENCH_PROPERTY, user_id: str = BENCH_USER) -> dict:
    """The spec's example request, dated from today so it never ages out of the lead-time window."""
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "entity": {"userId": user_id, "propertyId": property_id},
        "stay_date": (now.date() + timedelta(days=28)).isoformat(),
        "quote_time": now.isoformat().replace("+00:00", "Z"),
        "product": {"type": "standard", "refundable": False, "los": 2},
        "inventory": {"capacity": 50, "remaining": 10, "overbook_limit": 0},
        "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
        "context": {"season": "Winter", "day_of_week": 3, "weather": {}},
        "toggles": {"aggressive": False, "conservative": False, "use_ml": True, "use_competitors": True, "apply_seasonality": True},
        "allowed_price_grid": None,
    }


class AwsStack:
    """A moto server with the template's bucket, tables and queues, and the function env for them."""

    def __init__(self, log_dir: Path = LOG_DIR) -> None:
        self.server = MotoServer(log_path=log_dir / "moto.log")
        self.names: dict[str, str] = {}

    def start(self) -> AwsStack:
        self.server.start()
        template = SamTemplate(ROOT / "template.yaml", region=REGION, endpoint_url=self.server.url)
        resources = template.local_resources()
        create_resources(resources, self.server.url, REGION)
        self.names = {r.logical_id: r.name for r in resources}
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> AwsStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """The variables a function gets for these resources (credentials: moto's dummies)."""
        return {
            "AWS_ENDPOINT_URL": self.server.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "ARTIFACTS_BUCKET": self.names["ArtifactsBucket"],
            "OUTCOMES_TABLE": self.names["OutcomesTable"],
            "REGISTRY_TABLE": self.names["ModelRegistryTable"],
            "EXPERIMENTS_TABLE": self.names["ExperimentsTable"],
        }

    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def stores(self) -> Stores:
        """The stores on this stack; need ``AWS_ENDPOINT_URL`` etc. in ``os.environ`` (``use()``)."""
        return Stores.build(self.settings())

    @contextlib.contextmanager
    def use(self) -> Iterator[AwsStack]:
        """``os.environ`` pointed at this stack for the duration (boto3 reads it)."""
        with patched_environ(self.env()):
            yield self

    def deploy_model(self, model: ConversionModel = BENCH_MODEL, base_price: float = 120.0) -> None:
        """The registry layout scoring reads: CONFIG (base price), the artifact in S3, then LIVE."""
        with self.use():
            stores = self.stores()
            stores.registry.put_property_config(model.property_id, base_price)
            key = f"models/{model.property_id}/{model.version}.json"
            stores.artifacts.put_artifact(key, model.to_artifact())
            stores.registry.swap_live_model(model.property_id, model.version, key, None, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def pushgateway_available() -> bool:
    """Whether the pinned stack's Pushgateway is installed (``make setup``; ``local.prometheus_stack``)."""
    from local import prometheus_stack

    return prometheus_stack.find(prometheus_stack.PUSHGATEWAY) is not None


def pushgateway(extra_args: list[str] | None = None, checked: bool | None = None):
    """A real Pushgateway on a free port, in memory only (``support.promstack.Pushgateway``);
    unchecked as production runs it unless ``checked`` (default: checked unless ``extra_args``
    disable the check, as the benches that compare both ask)."""
    from local.prometheus_stack import PUSHGATEWAY_FLAGS
    from support.promstack import Pushgateway

    extra_args = extra_args or []
    if checked is None:
        checked = not any(a in PUSHGATEWAY_FLAGS for a in extra_args)
    return Pushgateway(extra_args=extra_args, checked=checked)
