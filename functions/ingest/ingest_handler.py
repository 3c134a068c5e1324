"""IngestFunction: POST /learn, booking outcomes for the learning loop."""

from pricing.api.ingest_app import handler

__all__ = ["handler"]
