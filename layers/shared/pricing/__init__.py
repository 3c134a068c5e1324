"""Dynamic pricing for hotels and short-term rentals, packaged as the shared Lambda layer.

Sub-packages:

* ``pricing.domain`` -- pure pricing, conversion models, experiments, drift and training.
  No AWS, no environment, no I/O: plain data in, plain data out.
* ``pricing.api`` -- the FastAPI apps behind API Gateway (score/health and learn).
* ``pricing.services`` -- use cases that join the domain to storage and observability.
* ``pricing.storage`` -- the one package that talks to AWS: a small store per concern.
* ``pricing.settings`` -- configuration, read once from the environment.
* ``pricing.observability`` -- metrics and their push, Sentry, request ids and logging.
"""

__version__ = "1.0.0"
