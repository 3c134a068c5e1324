"""Suite-wide safety: no test can reach a real AWS account or a real Sentry project.

Fake credentials and a refusing endpoint are set before any test module imports boto3; tests
that need storage start a moto server and point ``AWS_ENDPOINT_URL`` at it themselves.
"""

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)
# Port 9 (discard) refuses connections at once: an unconfigured store fails fast and visibly.
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
os.environ.pop("SENTRY_DSN", None)
os.environ.pop("PUSHGATEWAY_URL", None)
# The rules holdback prices a random 5% of a modelled property's quotes by rules (its quote id's
# token decides): a test asserting a model's price on one quote would fail one run in twenty.
# Off for every function and service the suite starts; the holdback's tests turn it on.
os.environ.setdefault("HOLDBACK_RATE", "0")


import asyncio

import pytest


@pytest.fixture(autouse=True)
def _main_thread_event_loop():
    """Mangum runs each invocation on the main thread's event loop, as it has one in Lambda.

    A test that used ``asyncio.run`` leaves the main thread with no loop at all, which would
    fail the next in-process handler call for a reason no Lambda container can meet.
    """
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    yield
