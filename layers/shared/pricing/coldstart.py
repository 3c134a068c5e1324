"""A cold start without the cyclic garbage collector.

Initialising a function -- importing FastAPI, Pydantic, Sentry and Prometheus, building the
app -- leaves some 135,000 long-lived objects, and the first invocation adds boto3's service
models. The cyclic collector runs hundreds of times meanwhile, and each of its full collections
walks the whole heap: a third of ScoreFunction's cold start (``bench/RESULTS.md``). None of
those objects is garbage. So, under a Lambda runtime, the collector is paused from the app
module's first import until the first invocation has been served; then everything alive is
frozen (``gc.freeze``: moved where the collector never looks again) and collection resumes over
what requests allocate.

Reference counting frees every acyclic object throughout. What this costs: a reference cycle
that became garbage before the freeze stays in memory for the container's life (it was built
once, at start-up, so that is bounded and small).

Outside a Lambda runtime (tests, scripts: no ``AWS_LAMBDA_RUNTIME_API``) both calls do nothing,
so an importer that never invokes cannot leave the collector off.

Usage, in an app module::

    from pricing import coldstart
    from pricing.settings import Settings

    settings = Settings.from_env()
    coldstart.pause_collector(settings)      # before the heavy imports
    ...
    def handler(event, context):
        try:
            ...
        finally:
            coldstart.resume_collector()
"""

from __future__ import annotations

import gc

from pricing.settings import Settings

_paused = False


def pause_collector(settings: Settings) -> None:
    """Turn the cyclic collector off until ``resume_collector`` (only under a Lambda runtime)."""
    global _paused
    if settings.lambda_runtime_api and gc.isenabled():
        gc.disable()
        _paused = True


def resume_collector() -> None:
    """Freeze what initialisation built and collect as usual from now on; later calls do nothing."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
