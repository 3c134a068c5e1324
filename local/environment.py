"""Which environment variables a local function gets on top of its template environment.

In order, later ones winning:

1. the local services: ``AWS_ENDPOINT_URL`` (moto) and ``PUSHGATEWAY_URL`` (the local Pushgateway);
2. variables given to ``make run``/``make invoke`` themselves, for the names in ``FORWARDED_ENV``;
3. an ``--env-vars`` JSON file in ``sam local invoke`` format: ``{"Parameters": {...}}`` applies
   to every function, ``{"ScoreFunction": {...}}`` to one (by logical id or function name).
   Unlike ``sam local invoke``, any variable may be set, not only those the template declares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Configuration a developer passes to `make run` / `make invoke` that must reach the functions.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "PUSHGATEWAY_URL",
    "PUSHGATEWAY_USERNAME",
    "PUSHGATEWAY_PASSWORD",
    "PUSHGATEWAY_BEARER_TOKEN",
    "SENTRY_DSN",
    "SENTRY_TRACES_SAMPLE_RATE",
    "BACKEND_API_URL",
    "BACKEND_API_KEY",
    "POWERTOOLS_LOG_LEVEL",
    "HOLDBACK_RATE",
    "HOLDBACK_DISABLED_PROPERTIES",
    "HOLDBACK_MAINTENANCE_RATE",
)


class EnvVarsError(ValueError):
    """An ``--env-vars`` file that is not a JSON object of objects of scalars."""


def forwarded(host_env: Mapping[str, str]) -> dict[str, str]:
    """The ``FORWARDED_ENV`` variables set (to anything but the empty string) in ``host_env``."""
    return {name: host_env[name] for name in FORWARDED_ENV if host_env.get(name)}


def load_env_vars(path: str | Path | None) -> dict[str, dict[str, str]]:
    """Read an ``--env-vars`` file: section name -> variables (values as strings).

    Raises:
        EnvVarsError: unreadable, not JSON, or not ``{section: {name: scalar}}``.
    """
    if not path:
        return {}
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnvVarsError(f"cannot read env vars file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise EnvVarsError(f'{path}: expected {{"Parameters": {{...}}, "<Function>": {{...}}}}')
    sections: dict[str, dict[str, str]] = {}
    for section, variables in data.items():
        sections[section] = {}
        for name, value in variables.items():
            if isinstance(value, (dict, list)):
                raise EnvVarsError(f"{path}: {section}.{name} must be a string, number or boolean")
            sections[section][name] = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
    return sections


def for_function(sections: Mapping[str, Mapping[str, str]], logical_id: str, function_name: str = "") -> dict[str, str]:
    """The variables an ``--env-vars`` file gives one function (``Parameters`` first)."""
    env = dict(sections.get("Parameters", {}))
    env.update(sections.get(function_name, {}) if function_name else {})
    env.update(sections.get(logical_id, {}))
    return env


def function_overrides(
    logical_id: str,
    function_name: str,
    *,
    services: Mapping[str, str],
    host_env: Mapping[str, str],
    env_vars: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The overrides of one function's environment, in the order of the module doc."""
    env = dict(services)
    env.update(forwarded(host_env))
    env.update(for_function(env_vars, logical_id, function_name))
    return env
