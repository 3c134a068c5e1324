"""All access to AWS, one small store per concern, over one client core (``pricing.storage.aws``).

* ``registry.Registry`` -- DynamoDB registry ``(property_id, record)``: ``record = "CONFIG"``
  holds the property's base price; ``"LIVE"`` points at the deployed model version;
  ``"MODEL#<version>"`` keeps every version. Index ``RegistryByRecord (record, property_id)``.
* ``artifacts.ArtifactStore`` -- S3: model artifacts, one JSON document per key.
* ``experiments.ExperimentStore`` -- DynamoDB experiments ``(experiment_id)``.
* ``outcomes.OutcomeStore`` -- DynamoDB outcomes ``(property_id, outcome_key)``, with the sparse
  indexes ``PropertiesWithOutcomes`` and ``ExperimentOutcomes (experiment_id, variant)``.
* ``queue.MessageQueue`` -- SQS: the retrain fan-out.
* ``secrets.resolve_secrets`` -- Secrets Manager: the credentials the settings name by ARN.
* ``stores.Stores`` -- all of them over one set of clients, for seeding, benchmarks and tests.

Nothing above this package imports boto3. Every failure to reach a store surfaces as
``StorageUnavailable``, so callers decide between falling back (scoring) and refusing to
acknowledge (ingestion) without knowing botocore's exception zoo. boto3 honours
``AWS_ENDPOINT_URL``, so local runs point the same code at moto's server.

This module holds only the errors: importing it costs no boto3.
"""

from pricing.storage.errors import ConditionFailed, StorageUnavailable, StoreRefused

__all__ = ["ConditionFailed", "StorageUnavailable", "StoreRefused"]
