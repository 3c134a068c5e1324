"""The replaced service's other routes: model registry, experiments, outcome statistics.

Routes only: each parses its parameters, calls one service method and maps its refusals --
``NotFound`` to 404, ``BadParameter`` to 422 (the contract's error body), a store that cannot be
reached to 503 with ``Retry-After``. The services are built on first use (``factory``), so a
container that only ever prices never creates them, and /score's path is what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from pricing.api.common import InvalidJSON, parse_strict_json
from pricing.domain.limits import is_property_id
from pricing.observability.context import current_request_id, logger
from pricing.observability.sentry import set_request_context
from pricing.storage import StorageUnavailable

T = TypeVar("T")
RETRY_AFTER_SECONDS = 5
LIMIT = Query(None, ge=1, le=500, description="page size (default 50)")
NEXT_TOKEN = Query(None, max_length=4096, description="the previous page's next_token")
PROPERTY_PATH = Path(min_length=1, max_length=128)


def lazy(build: Callable[[], T]) -> Callable[[], T]:
    """``build()`` once, on first call: a service built per container, only if its routes are used."""
    made: list[T] = []

    def get() -> T:
        if not made:
            made.append(build())
        return made[0]

    return get


def answer(call: Callable[..., dict], *args: Any) -> dict:
    from pricing.services.catalog import BadParameter, NotFound

    try:
        return call(*args)
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except BadParameter as exc:
        raise HTTPException(status_code=422, detail=[{"loc": ["query", exc.field], "msg": str(exc), "type": "value_error"}]) from None
    except StorageUnavailable as exc:
        logger.warning("store unavailable", extra={"error": str(exc)})
        raise HTTPException(
            status_code=503, detail="store unavailable; retry shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from exc


def property_id_checked(property_id: str) -> str:
    if not is_property_id(property_id):
        raise HTTPException(
            status_code=422,
            detail=[
                {"loc": ["path", "property_id"], "type": "value_error", "msg": "property id must be 1-128 characters of [A-Za-z0-9_.:-]"}
            ],
        )
    set_request_context(current_request_id(), property_id=property_id)
    return property_id


def add_model_routes(app: FastAPI, catalog: Callable[[], Any]) -> None:
    """``GET /``, ``/model/info``, ``/model/list``, ``/model/registry``, ``/model/metrics/{id}``."""

    @app.get("/")
    def root() -> dict:
        return catalog().root()

    @app.get("/model/info")
    def model_info() -> dict:
        return answer(catalog().model_info)

    @app.get("/model/list")
    def model_list(
        property_id: str | None = Query(None, min_length=1, max_length=128), limit: int | None = LIMIT, next_token: str | None = NEXT_TOKEN
    ) -> dict:
        if property_id is not None:
            property_id_checked(property_id)
        return answer(catalog().model_list, property_id, limit, next_token)

    @app.get("/model/registry")
    def model_registry() -> dict:
        return answer(catalog().model_registry)

    @app.get("/model/metrics/{property_id}")
    def model_metrics(property_id: str = PROPERTY_PATH, model_type: str = Query("conversion", min_length=1, max_length=64)) -> dict:
        return answer(catalog().model_metrics, property_id_checked(property_id), model_type)


def add_experiment_routes(app: FastAPI, admin: Callable[[], Any]) -> None:
    """``POST /ab/experiments``, ``GET /ab/experiments``, ``GET .../{id}/results``, ``POST .../{id}/stop``.

    The two POSTs are operators' routes: in AWS they are on the operator API (its own usage plan
    and keys, see template.yaml), so a pricing caller's key is refused before the function runs.
    """

    @app.post("/ab/experiments")
    async def create_experiment(request: Request) -> dict:
        from pricing.services.experiment_admin import ExperimentRequest

        fields: dict[str, Any] = dict(request.query_params)
        if "property_ids" in fields:
            fields["property_ids"] = [p for p in fields["property_ids"].split(",") if p]
        body = await request.body()
        if body.strip():
            try:
                document = parse_strict_json(body)  # the middleware checked it already: cannot fail
            except InvalidJSON as exc:
                raise RequestValidationError([{"loc": ("body",), "msg": str(exc), "type": "json_invalid"}]) from None
            if not isinstance(document, dict):
                raise RequestValidationError([{"loc": ("body",), "msg": "must be a JSON object", "type": "dict_type"}])
            fields.update(document)  # the same fields as JSON; a body field wins over its query twin
        try:
            experiment = ExperimentRequest.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return await run_in_threadpool(answer, admin().create, experiment)

    @app.get("/ab/experiments")
    def list_experiments(active_only: bool = False, limit: int | None = LIMIT, next_token: str | None = NEXT_TOKEN) -> dict:
        return answer(admin().list, active_only, limit, next_token)

    @app.get("/ab/experiments/{experiment_id}/results")
    def experiment_results(experiment_id: str = Path(min_length=1, max_length=256)) -> dict:
        return answer(admin().results, experiment_id)

    @app.post("/ab/experiments/{experiment_id}/stop")
    def stop_experiment(experiment_id: str = Path(min_length=1, max_length=256)) -> dict:
        return answer(admin().stop, experiment_id)


def add_outcome_routes(app: FastAPI, outcomes: Callable[[], Any]) -> None:
    """``GET /learn/outcomes/properties`` and ``GET /learn/outcomes/{property_id}/stats`` (IngestFunction)."""

    @app.get("/learn/outcomes/properties")
    def outcome_properties(limit: int | None = LIMIT, next_token: str | None = NEXT_TOKEN) -> dict:
        return answer(outcomes().properties, limit, next_token)

    @app.get("/learn/outcomes/{property_id}/stats")
    def outcome_stats(property_id: str = PROPERTY_PATH) -> dict:
        return answer(outcomes().stats, property_id_checked(property_id))
