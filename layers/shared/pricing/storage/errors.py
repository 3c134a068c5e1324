"""What the stores raise, whatever the AWS service behind them."""

from __future__ import annotations

from typing import Any


class StorageUnavailable(RuntimeError):
    """A store could not be reached, timed out, throttled us, or answered with an error."""


class StoreRefused(StorageUnavailable):
    """The store refused the request itself (ValidationException: a limit the domain should have
    checked, or a page cursor of another list), so an identical retry would fail the same way. A
    ``StorageUnavailable`` for callers that only know that one; ingestion refuses the one item
    instead of the batch."""


class ConditionFailed(RuntimeError):
    """A conditional write lost a race: the item was not in the expected state.

    ``item``: the item as stored, in DynamoDB's wire form, when the write asked for it.
    """

    def __init__(self, message: str, item: Any = None):
        super().__init__(message)
        self.item = item or {}
