"""make run's banner (local.run.banner): printed once the demo is seeded, ending with a Ready line
that names what prices by a model, the seeding's log named rather than poured into it."""

from __future__ import annotations

import io
from pathlib import Path

from local.run import Hushable, banner
from local.stack import SeedResult


class FakeStack:
    def addresses(self):
        return [
            ("API", "http://127.0.0.1:8000", "GET /health, POST /score, POST /learn"),
            ("Prometheus", "http://127.0.0.1:9090", "scrapes the Pushgateway"),
        ]


def summary(property_id: str, live: str | None) -> dict:
    return {
        "property_id": property_id,
        "live_version": live,
        "stored": 3000,
        "duplicates": 0,
        "retrain": "deployed" if live else "rejected",
    }


def test_the_banner_ends_with_ready_and_names_the_demo_models_and_the_seed_log():
    seeded = SeedResult(True, [summary("demo-hotel-1", "v1"), summary("demo-loft-1", None)], Path("/x/.run/logs/seed.log"), 14.6)
    lines = banner(FakeStack(), seeded)
    text = "\n".join(lines)
    assert "  API         http://127.0.0.1:8000" in text
    assert "Demo data (15 s, log /x/.run/logs/seed.log):" in text
    assert "demo-hotel-1  live model v1  (outcomes stored 3000, 0 already there; retrain deployed)" in text
    assert "demo-loft-1   live model none" in text
    assert [line for line in lines if line][-1] == (
        "Ready: /score for demo-hotel-1 prices with ml_elasticity; any other property by rules."
    )


def test_without_demo_models_ready_says_everything_prices_by_rules():
    lines = banner(FakeStack(), None)
    assert [line for line in lines if line][-1] == "Ready (without demo models): every property prices by rules."


def test_output_is_held_back_while_hushed_only():
    out = io.StringIO()
    echo = Hushable(out)
    echo.write("before\n")
    echo.hushed = True
    echo.write('[IngestFunction 1a2b] {"level": "INFO"}\n')
    echo.hushed = False
    echo.write("after\n")
    assert out.getvalue() == "before\nafter\n"
