"""pricing.coldstart: the collector is off from init to the first invocation, only under Lambda."""

from __future__ import annotations

import gc

import pytest

from pricing import coldstart
from pricing.settings import Settings

UNDER_LAMBDA = Settings(lambda_runtime_api="127.0.0.1:9001")


@pytest.fixture
def lambda_runtime(monkeypatch):
    """A process a Lambda runtime client serves; the collector restored afterwards."""
    monkeypatch.setattr(coldstart, "_paused", False)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_under_lambda_the_collector_is_off_until_the_first_invocation_then_init_is_frozen(lambda_runtime):
    coldstart.pause_collector(UNDER_LAMBDA)
    assert not gc.isenabled()
    built_at_init = [object() for _ in range(10)]
    coldstart.resume_collector()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built_at_init)


def test_resume_is_once_and_leaves_a_collector_turned_on_later_alone(lambda_runtime):
    coldstart.pause_collector(UNDER_LAMBDA)
    coldstart.resume_collector()
    gc.disable()  # someone else's decision, after the cold start
    coldstart.resume_collector()
    assert not gc.isenabled()


def test_outside_lambda_nothing_changes(monkeypatch):
    monkeypatch.setattr(coldstart, "_paused", False)
    frozen = gc.get_freeze_count()
    coldstart.pause_collector(Settings(lambda_runtime_api=""))
    assert gc.isenabled()
    coldstart.resume_collector()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_collector_already_off_is_not_turned_on(lambda_runtime):
    gc.disable()
    coldstart.pause_collector(UNDER_LAMBDA)
    coldstart.resume_collector()
    assert not gc.isenabled()
