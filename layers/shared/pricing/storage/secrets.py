"""The credentials the settings name by ARN, fetched from Secrets Manager.

Credentials live in Secrets Manager, never in the template or the function's environment: the
template passes only the secrets' ARNs. They are fetched once per container, by the app module as
it builds its configuration, with a short timeout: a cold start must not hang on them. A secret
that cannot be had leaves its value empty -- the competitor backend or the Pushgateway then
refuses us, which is counted and alerted on -- rather than failing the container: neither
credential is needed to price a quote or store an outcome.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from pricing.settings import Settings
from pricing.storage.aws import AwsClients
from pricing.storage.errors import StorageUnavailable

logger = logging.getLogger("pricing.storage")

SECRET_TIMEOUTS: dict[str, Any] = {"connect_timeout": 1, "read_timeout": 2}


class SecretReader:
    """Secrets Manager through Powertools' parameters provider (its cache keeps a value for
    ``max_age`` seconds), on the session of the container's other clients: a second session
    would load endpoint and credential data all over again. Measured: importing the provider
    costs some 7 ms once boto3 is loaded, and only a container with an ARN to resolve pays it;
    sharing the session saves more than that on its first store client."""

    def __init__(self, aws: AwsClients):
        self.aws = aws
        self._provider: Any = None

    def get(self, arn: str) -> str:
        """The ``SecretString`` of the secret ``arn``; raises ``StorageUnavailable``."""
        from aws_lambda_powertools.utilities.parameters import GetParameterError, SecretsProvider

        if self._provider is None:
            from botocore.config import Config

            config = Config(**SECRET_TIMEOUTS, retries={"total_max_attempts": 2, "mode": "standard"})
            self._provider = SecretsProvider(boto3_client=self.aws.session().client("secretsmanager", config=config))
        try:
            value = self._provider.get(arn, max_age=300)
        except GetParameterError as exc:
            # Its message is botocore's (the error code, or what failed to connect), never the value.
            raise StorageUnavailable(f"secretsmanager.get_secret_value: {exc}") from None
        if not isinstance(value, str):
            raise StorageUnavailable("secretsmanager.get_secret_value: the secret has no SecretString")
        return value


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def resolve_secrets(settings: Settings, aws: AwsClients | None = None) -> Settings:
    """``settings`` with the credentials its ``*_secret_arn`` fields name, fetched from Secrets Manager.

    ``BACKEND_API_KEY_SECRET_ARN``: the secret is the key itself, or ``{"api_key": "..."}``.
    ``PUSHGATEWAY_CREDENTIALS_SECRET_ARN``: ``{"username": "...", "password": "..."}`` or
    ``{"bearer_token": "..."}``. A value set directly in the environment wins (local runs). Never
    raises: a secret that cannot be fetched or read is logged (by ARN, never by value) and left empty.
    Without an ARN to resolve it returns at once, without importing boto3.
    """
    backend_arn = settings.backend_api_key_secret_arn if not settings.backend_api_key else ""
    given = settings.pushgateway_username or settings.pushgateway_bearer_token
    pushgateway_arn = settings.pushgateway_credentials_secret_arn if not given else ""
    if not (backend_arn or pushgateway_arn):
        return settings
    secrets = SecretReader(aws or AwsClients())
    changes: dict[str, Any] = {}
    if backend_arn:
        try:
            text = secrets.get(backend_arn)
            doc = _json_object(text)
            key = doc.get("api_key") if doc is not None else text.strip()
            if isinstance(key, str) and key:
                changes["backend_api_key"] = key
            else:
                logger.error("secret %s holds no API key", backend_arn)
        except StorageUnavailable as exc:
            logger.error("backend API key secret %s unavailable: %s", backend_arn, exc)
    if pushgateway_arn:
        try:
            doc = _json_object(secrets.get(pushgateway_arn)) or {}
            if isinstance(doc.get("bearer_token"), str) and doc["bearer_token"]:
                changes["pushgateway_bearer_token"] = doc["bearer_token"]
            elif isinstance(doc.get("username"), str) and doc["username"] and isinstance(doc.get("password"), str):
                changes["pushgateway_username"] = doc["username"]
                changes["pushgateway_password"] = doc["password"]
            else:
                logger.error("secret %s holds neither username/password nor bearer_token", pushgateway_arn)
        except StorageUnavailable as exc:
            logger.error("Pushgateway credentials secret %s unavailable: %s", pushgateway_arn, exc)
    return dataclasses.replace(settings, **changes) if changes else settings
