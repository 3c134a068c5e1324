"""The pricing domain: pure functions and value objects over plain data (no I/O)."""
