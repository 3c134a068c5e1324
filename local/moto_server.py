"""moto's server with DynamoDB's item writes made atomic, as they are in DynamoDB.

    python -m local.moto_server -H 127.0.0.1 -p 5000     # the arguments of ``python -m moto.server``

moto's server answers requests on several threads, and its DynamoDB backend checks a write's
condition and then writes without a lock: two concurrent ``attribute_not_exists`` puts of one
key can both succeed, which DynamoDB never allows. Ingestion relies on exactly that guarantee
(of concurrent writers of one outcome, one is told it stored it), so every item write here holds
one lock from its condition check to its write.
"""

from __future__ import annotations

import functools
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_WRITES = threading.RLock()


def _atomic(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _WRITES:
            return method(*args, **kwargs)

    return locked


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    main()
