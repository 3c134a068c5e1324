"""ScoreFunction: POST /score and GET /health behind API Gateway, and the scheduled synthetic check."""

from pricing.api.score_app import handler

__all__ = ["handler"]
