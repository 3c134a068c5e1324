"""Observability: metrics and their push, Sentry, request ids and structured logging."""
