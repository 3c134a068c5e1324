"""The demo seeding of ``make run`` (local.seed), in-process against a moto server: every demo
property ends with a live model that /score prices with, and seeding twice changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pricing.api import retrain_app
from pricing.api.schemas import ScoreRequest, quote_response
from pricing.competitors import CompetitorClient
from pricing.services.retraining import RetrainingService
from pricing.services.scoring import ScoringService
from pricing.storage.stores import Stores
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures; puts local/ on the path


@pytest.fixture
def seeded_env(aws, monkeypatch):  # noqa: F811
    import local.seed as seed_module

    settings = aws.settings()
    stores = Stores.build(settings)
    # The seed retrains through the handler's service: point it at this test's resources.
    monkeypatch.setattr(
        retrain_app, "_service", RetrainingService(settings, stores.registry, stores.artifacts, stores.outcomes, stores.queue)
    )
    return seed_module, settings, stores


def test_demo_properties_price_with_their_own_model_and_reseeding_is_harmless(seeded_env):
    seed_module, settings, stores = seeded_env

    first = seed_module.seed(n_outcomes=1500, api_url=None, stores=stores)
    again = seed_module.seed(n_outcomes=1500, api_url=None, stores=stores)

    assert [s["property_id"] for s in first] == ["demo-hotel-1", "demo-hotel-2", "demo-loft-1"]
    assert all(s["retrain"] == "deployed" and s["stored"] == 1500 for s in first), first
    assert all(s["retrain"] == "skipped" and s["duplicates"] == 1500 for s in again), again
    assert [s["live_version"] for s in again] == [s["live_version"] for s in first]

    scoring = ScoringService(settings, stores.registry, stores.artifacts, stores.experiments, CompetitorClient("", "", 0.3))
    now = datetime.now(UTC)
    for summary in first:
        request = ScoreRequest.model_validate(
            {
                "entity": {"userId": "demo-user", "propertyId": summary["property_id"]},
                "stay_date": (now + timedelta(days=14)).date().isoformat(),
                "quote_time": now.isoformat(),
                "inventory": {"capacity": 100, "remaining": 35},
            }
        )
        safety = quote_response(*scoring.score(request.to_quote(), "req-demo"))["safety"]
        assert safety["pricing_method"] == "ml_elasticity"
        assert safety["model_version"] == summary["live_version"]
