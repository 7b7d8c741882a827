"""The control plane's HTTP routes, at the managed service's paths, each a thin call into its module.

Identifiers in paths are ARNs, which botocore percent-encodes ('/' as %2F); the server decodes them, so the
routes take the rest of the path. Work runs on a thread (`asyncio.to_thread`) so the event loop keeps
serving Converse requests. Every failure is answered in the shape botocore parses (see errors.py).
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute

from vlmtune.errors import VlmtuneError
from vlmtune.service import customization, imports, invocations, models
from vlmtune.service import names as n
from vlmtune.service.errors import AccessDeniedError, InternalError, ServiceError, ValidationError
from vlmtune.service.progress import LOG
from vlmtune.serving import BadRequest
from vlmtune.serving.auth import check_key

log = logging.getLogger(__name__)


class ControlRoute(APIRoute):
    """Errors of control-plane routes in the service's shape, whatever raised them."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request):
            try:
                return await handler(request)
            except ServiceError as e:
                return e.response()
            except BadRequest as e:
                error = AccessDeniedError(e.message) if e.status == 401 else ValidationError(e.message)
                return error.response()
            except VlmtuneError as e:
                return ValidationError(str(e)).response()
            except Exception as e:  # noqa: BLE001 - answered as InternalServerException, logged with its traceback
                log.exception("control-plane request %s %s failed", request.method, request.url.path)
                return InternalError(f"internal error: {type(e).__name__}: {e}").response()

        return handle


def install(app: FastAPI, svc) -> None:
    """Add the control plane's routes to the runtime's app, so both answer on one port."""
    router = APIRouter(route_class=ControlRoute)

    async def call(request: Request, fn, *args, status: int = 200, body: bool = False):
        check_key(request.headers.get("authorization"), svc.cfg.api_key, allow_sigv4=True)
        if body:
            args = (*args, await _body(request))
        result = await asyncio.to_thread(fn, *args)
        return JSONResponse({} if result is None else result, status)

    def query(request: Request) -> dict:
        return dict(request.query_params)

    # ---- model customization jobs
    @router.post("/model-customization-jobs")
    async def create_job(request: Request):
        return await call(request, customization.create, svc, status=201, body=True)

    @router.get("/model-customization-jobs")
    async def list_jobs(request: Request):
        return await call(request, customization.list_jobs, svc, query(request))

    @router.post("/model-customization-jobs/{identifier:path}/stop")
    async def stop_job(identifier: str, request: Request):
        return await call(request, customization.stop, svc, identifier)

    @router.get("/model-customization-jobs/{identifier:path}")
    async def get_job(identifier: str, request: Request):
        return await call(request, customization.get, svc, identifier)

    # ---- custom models
    @router.get("/custom-models")
    async def list_custom(request: Request):
        return await call(request, models.list_custom, svc, query(request))

    @router.post("/custom-models/create-custom-model")
    async def create_custom(request: Request):
        return await call(request, imports.create_custom_model, svc, status=202, body=True)

    @router.get("/custom-models/{identifier:path}")
    async def get_custom(identifier: str, request: Request):
        return await call(request, lambda: models.describe_custom(svc, n.get(svc.store, "custom_models", identifier)))

    @router.delete("/custom-models/{identifier:path}")
    async def delete_custom(identifier: str, request: Request):
        return await call(request, models.delete_custom, svc, identifier)

    # ---- deployments
    deployments = "/model-customization/custom-model-deployments"

    @router.post(deployments)
    async def create_deployment(request: Request):
        return await call(request, svc.deployments.create, status=202, body=True)

    @router.get(deployments)
    async def list_deployments(request: Request):
        return await call(request, svc.deployments.list, query(request))

    @router.get(deployments + "/{identifier:path}")
    async def get_deployment(identifier: str, request: Request):
        return await call(request, svc.deployments.get, identifier)

    @router.patch(deployments + "/{identifier:path}")
    async def update_deployment(identifier: str, request: Request):
        return await call(request, svc.deployments.update, identifier, status=202, body=True)

    @router.delete(deployments + "/{identifier:path}")
    async def delete_deployment(identifier: str, request: Request):
        return await call(request, svc.deployments.delete, identifier)

    # ---- model import
    @router.post("/model-import-jobs")
    async def create_import(request: Request):
        return await call(request, imports.create, svc, status=201, body=True)

    @router.get("/model-import-jobs")
    async def list_imports(request: Request):
        return await call(request, imports.list_jobs, svc, query(request))

    @router.get("/model-import-jobs/{identifier:path}")
    async def get_import(identifier: str, request: Request):
        return await call(request, lambda: imports.describe(n.get(svc.store, "import_jobs", identifier)))

    @router.get("/imported-models")
    async def list_imported(request: Request):
        return await call(request, models.list_imported, svc, query(request))

    @router.get("/imported-models/{identifier:path}")
    async def get_imported(identifier: str, request: Request):
        return await call(request, lambda: models.describe_imported(n.get(svc.store, "imported_models", identifier)))

    @router.delete("/imported-models/{identifier:path}")
    async def delete_imported(identifier: str, request: Request):
        return await call(request, models.delete_imported, svc, identifier)

    # ---- batch inference
    @router.post("/model-invocation-job")
    async def create_invocation(request: Request):
        return await call(request, invocations.create, svc, body=True)

    @router.get("/model-invocation-jobs")
    async def list_invocations(request: Request):
        return await call(request, invocations.list_jobs, svc, query(request))

    @router.post("/model-invocation-job/{identifier:path}/stop")
    async def stop_invocation(identifier: str, request: Request):
        return await call(request, invocations.stop, svc, identifier)

    @router.get("/model-invocation-job/{identifier:path}")
    async def get_invocation(identifier: str, request: Request):
        return await call(request, invocations.get, svc, identifier)

    # ---- vlmtune's own: a job's log (no managed-service API has one)
    @router.get("/vlmtune/jobs/{identifier:path}/log")
    async def job_log(identifier: str, request: Request):
        check_key(request.headers.get("authorization"), svc.cfg.api_key, allow_sigv4=True)
        offset = request.query_params.get("offset", "0")
        if not offset.isdigit():
            raise ValidationError(f"offset: expected a byte offset (0 or more), found {offset!r}")
        text, end = await asyncio.to_thread(read_log, svc, identifier, int(offset))
        return PlainTextResponse(text, headers={"x-vlmtune-log-offset": str(end)})

    app.include_router(router)


def read_log(svc, identifier: str, offset: int) -> tuple[str, int]:
    """The job's log from byte `offset`, and where it ends now (for the next read of a follower)."""
    for table in (customization.TABLE, invocations.TABLE):
        if row := n.find(svc.store, table, identifier):
            path = svc.job_folder(row["id"]) / LOG
            if not path.is_file():
                return "", 0
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            return data.decode("utf-8", errors="replace"), offset + len(data)
    n.get(svc.store, customization.TABLE, identifier)  # raises the not-found error
    return "", 0


async def _body(request: Request) -> dict:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ValidationError(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValidationError(f"request body: expected a JSON object, found {type(body).__name__}")
    return body
