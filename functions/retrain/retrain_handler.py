"""RetrainFunction: the scheduled retraining run, its fanned-out batches, and manual invokes."""

from pricing.api.retrain_app import handler

__all__ = ["handler"]
