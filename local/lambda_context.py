"""A stand-in for the Lambda context object, for calling a handler directly in this process.

Tests, benches and the demo seed call handlers without a runtime; local Lambda (``local.container``)
gives them the runtime client's real context instead.
"""

from __future__ import annotations

import uuid


class FakeContext:
    """The attributes of a Lambda context object that the handlers and their libraries read."""

    function_version = "$LATEST"
    log_stream_name = "local"

    def __init__(
        self, function_name: str = "pricing-local", *, remaining_ms: int = 10_000, memory_mb: int = 512, request_id: str | None = None
    ) -> None:
        self.function_name = function_name
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
