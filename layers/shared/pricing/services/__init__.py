"""Use cases: each joins the pure domain to storage and observability."""
