"""The dashboard's HTTP routes: the page at `/`, its files, and a JSON API under /dashboard/api.

Each route checks the session (auth.py) and makes one call: into the service's own modules for what changes
state (a job is created and stopped, a model deployed, exactly as through boto3), into this package's
readers for what it shows. Errors have the control plane's shape, `{"message": ...}`, which the page shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from vlmtune.service import customization, models
from vlmtune.service.dashboard import auth, compare, evals, forms, live, machine, playground, report, runs
from vlmtune.service.errors import ValidationError
from vlmtune.service.routes import ControlRoute, _body

STATIC = Path(__file__).parent / "static"
API = "/dashboard/api"


def install(app: FastAPI, svc) -> None:
    router = APIRouter(route_class=ControlRoute)
    key = svc.cfg.api_key

    async def call(request: Request, fn, *args, body: bool = False):
        auth.require(request, key)
        if body:
            args = (*args, await _body(request))
        result = await asyncio.to_thread(fn, *args)
        return JSONResponse({} if result is None else result)

    def arg(request: Request, name: str) -> str:
        value = request.query_params.get(name)
        if not value:
            raise ValidationError(f"{name}: required, found nothing")
        return value

    def number(request: Request, name: str, default: int) -> int:
        value = request.query_params.get(name, str(default))
        if not value.isdigit():
            raise ValidationError(f"{name}: expected a whole number, found {value!r}")
        return int(value)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    # ---- session
    @router.get(API + "/session")
    async def session(request: Request):
        return {"authRequired": key is not None, "signedIn": auth.signed_in(request, key), "home": str(svc.home)}

    @router.post(API + "/login")
    async def login(request: Request):
        response = JSONResponse({"signedIn": True})
        auth.log_in(response, key, str((await _body(request)).get("key") or ""))
        return response

    @router.post(API + "/logout")
    async def logout():
        response = JSONResponse({"signedIn": False})
        auth.log_out(response)
        return response

    # ---- runs and jobs
    @router.get(API + "/runs")
    async def list_runs(request: Request):
        return await call(request, lambda: {"runs": runs.list_runs(svc)})

    @router.get(API + "/run")
    async def run(request: Request):
        return await call(request, runs.detail, svc, arg(request, "ref"))

    @router.get(API + "/run/curves")
    async def curves(request: Request):
        return await call(request, lambda ref: runs.curves_of(svc, ref), arg(request, "ref"))

    @router.get(API + "/run/report")
    async def run_report(request: Request):
        return await call(request, report.report, svc, arg(request, "ref"))

    @router.get(API + "/run/stream")
    async def stream(request: Request):
        auth.require(request, key)
        ref = arg(request, "ref")
        cursor = live.Cursor.decode(request.headers.get("last-event-id") or request.query_params.get("cursor"))
        await asyncio.to_thread(runs.resolve, svc, ref)
        return StreamingResponse(live.events(svc, ref, cursor, request.is_disconnected), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    @router.get(API + "/run/file")
    async def run_file(request: Request):
        auth.require(request, key)
        path = await asyncio.to_thread(runs.artifact_path, svc, arg(request, "ref"), arg(request, "path"))
        return FileResponse(path)

    @router.get(API + "/form")
    async def job_form(request: Request):
        return await call(request, forms.form, svc)

    @router.post(API + "/jobs")
    async def create_job(request: Request):
        return await call(request, customization.create, svc, body=True)

    @router.post(API + "/jobs/stop")
    async def stop_job(request: Request):
        return await call(request, lambda body: runs.stop(svc, str(body.get("ref") or "")), body=True)

    @router.get(API + "/compare")
    async def compare_runs(request: Request):
        refs = [r for r in arg(request, "runs").split(",") if r]
        return await call(request, compare.compare, svc, refs)

    # ---- evals and predictions
    @router.get(API + "/evals")
    async def list_evals(request: Request):
        return await call(request, lambda: {"folders": evals.list_folders(svc)})

    @router.get(API + "/predictions")
    async def predictions(request: Request):
        return await call(request, evals.browse, svc, arg(request, "folder"), request.query_params.get("show", "all"),
                          number(request, "offset", 0), number(request, "limit", 50))

    @router.get(API + "/predictions/image")
    async def prediction_image(request: Request):
        auth.require(request, key)
        raw, media = await asyncio.to_thread(evals.image, svc, arg(request, "folder"), arg(request, "id"), number(request, "n", 0))
        return Response(raw, media_type=media, headers={"cache-control": "private, max-age=300"})

    # ---- models, deployments, playground
    @router.get(API + "/models")
    async def list_models(request: Request):
        return await call(request, lambda: {"custom": models.list_custom(svc, {})["modelSummaries"],
                                            "imported": models.list_imported(svc, {})["modelSummaries"],
                                            "deployments": svc.deployments.list({})["modelDeploymentSummaries"]})

    @router.post(API + "/deployments")
    async def deploy(request: Request):
        return await call(request, svc.deployments.create, body=True)

    @router.post(API + "/deployments/delete")
    async def undeploy(request: Request):
        return await call(request, lambda body: svc.deployments.delete(str(body.get("arn") or "")), body=True)

    @router.post(API + "/playground")
    async def ask(request: Request):
        auth.require(request, key)
        return await playground.ask(svc, await _body(request))

    @router.get(API + "/machine")
    async def machine_state(request: Request):
        return await call(request, machine.snapshot, svc)

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
