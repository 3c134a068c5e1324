"""RetrainFunction: the scheduled retraining run, its fanned-out batches, and manual invokes."""

from pricing.services.retraining import handler

__all__ = ["handler"]
