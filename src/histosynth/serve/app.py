"""The FastAPI app of ``histosynth serve``: one static page plus a small JSON API.

Routes: ``GET /`` (the page), ``GET /api/info``, ``POST /api/generate`` (multipart form: ``mode``,
``mask`` + ``mask_encoding``, ``label``, ``steps``, ``guidance``, ``sampler``, ``seed`` and the mode's
own fields), ``POST /api/mask`` (an uploaded mask -> class ids for the painter), ``GET
/api/model-mask`` (``label``, ``seed``: a mask from the model folder's mask model, the page's starting
mask when there is one), ``GET /api/procedural-mask``, and ``/api/datasets/...`` for browsing. Every
error is HTTP 4xx with the one-line JSON ``{"error": "..."}``, which never names a server path.
Requests whose Host (or Origin) is not on the allow-list get 400 (403) before any route runs (see
:mod:`histosynth.serve.guards`). Generation and mask-model masks run in a worker thread, one request
at a time.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from histosynth.errors import HistosynthError, InputError
from histosynth.models.pipeline import LatentDiffusionModel
from histosynth.serve.datasets import BrowseError, DatasetBrowser, NotFound
from histosynth.serve.guards import LOOPBACK_HOSTS, BodyLimit, HostGuard, public_error, public_message, split_host
from histosynth.serve.service import GenerationService, ServeLimits
from histosynth.serve.uploads import colour_mask, data_url, decode_mask

PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _check_range(value: int, low: int, high: int, name: str) -> None:
    if not low <= value <= high:
        raise InputError(f"must be within {low}..{high}", name)


def create_app(model: LatentDiffusionModel | str | Path, device: str = "cpu", limits: ServeLimits | None = None,
               datasets: str | Path | None = None, hosts: Sequence[str] | None = None) -> FastAPI:
    """Build the app; the model loads here, once (a bad folder fails before the server binds).

    ``hosts``: the Host headers the app answers (``name`` or ``name:port``, see
    :func:`histosynth.serve.guards.allowed_hosts`); default: the loopback names on any port.
    """
    hosts = tuple(LOOPBACK_HOSTS if hosts is None else hosts)
    bad = [host for host in hosts if split_host(host) is None]
    if bad:
        raise InputError(f"{bad[0]!r} is not a host name or name:port", "hosts")
    if not isinstance(model, LatentDiffusionModel):
        model = LatentDiffusionModel.load(model)
    service = GenerationService(model, device, limits)
    browser = DatasetBrowser(datasets)
    limits = service.limits
    static = Path(str(resources.files("histosynth.serve") / "static"))
    lock = asyncio.Lock()
    waiting = 0

    app = FastAPI(title="histosynth", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service, app.state.browser = service, browser
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.add_middleware(HostGuard, allowed=hosts)  # outermost: refuses before any body is read
    app.mount("/static", StaticFiles(directory=static), name="static")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": public_message(message)}, status_code=status)

    @app.exception_handler(HistosynthError)
    async def _input_error(_: Request, exc: HistosynthError) -> JSONResponse:
        return error(400, public_error(exc))

    @app.exception_handler(BrowseError)
    async def _browse_error(_: Request, exc: BrowseError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:  # logged by the server as well
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(static / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/api/info")
    async def info() -> dict:
        return {**service.info(), "datasets": browser.root is not None}

    async def exclusive(function, *args):
        """Run ``function(*args)`` in a worker thread, one model call at a time; 429 when too many wait."""
        nonlocal waiting
        if lock.locked() and waiting >= limits.max_waiting:
            raise HTTPException(429, f"busy: {waiting} requests already wait for the model; retry shortly")
        waiting += 1
        entered = False
        try:
            async with lock:
                waiting, entered = waiting - 1, True
                return await run_in_threadpool(function, *args)
        finally:
            if not entered:  # cancelled while queued
                waiting -= 1

    @app.post("/api/generate")
    async def generate(request: Request) -> dict:
        form = await request.form(max_files=8, max_fields=32, max_part_size=limits.max_upload_bytes)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        files = {k: await v.read() for k, v in form.items() if not isinstance(v, str)}
        parsed = service.parse(values, files)
        result = await exclusive(service.run, parsed)
        labels = service.model.classes.labels
        return {"image": data_url(result.image), "mask": data_url(colour_mask(parsed.mask)),
                "seconds": round(result.seconds, 3), "mode": parsed.mode, "steps": parsed.steps,
                "guidance": parsed.guidance, "sampler": parsed.sampler, "seed": parsed.seed,
                "label": labels[parsed.label] if parsed.label < len(labels) else "", "model": service.identity}

    @app.post("/api/mask")
    async def mask_ids(request: Request) -> dict:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limits.max_upload_bytes)
        upload = form.get("mask")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "mask: missing upload")
        ids = decode_mask(await upload.read(), "mask", limits.max_side, service.model.classes,
                          "ids" if form.get("mask_encoding") == "ids" else "raw", service.tile)
        return {"size": int(ids.shape[0]), "ids": base64.b64encode(ids.tobytes()).decode()}

    @app.get("/api/model-mask")
    async def model_mask(label: str = "", seed: int = 0, steps: int | None = None) -> dict:
        request = service.model_mask_request(label, seed, steps)  # bad requests fail before queueing
        ids = (await exclusive(service.model_mask, *request)).astype(np.uint8)
        return {"size": int(ids.shape[0]), "ids": base64.b64encode(ids.tobytes()).decode(), "seed": seed}

    @app.get("/api/procedural-mask")
    async def procedural(foreground: float = 0.4, seed: int = 0) -> dict:
        ids = service.procedural_mask(foreground, seed).astype(np.uint8)
        return {"size": int(ids.shape[0]), "ids": base64.b64encode(ids.tobytes()).decode()}

    @app.get("/api/datasets")
    async def datasets_list() -> list[dict]:
        return await run_in_threadpool(browser.list)

    @app.get("/api/datasets/{name}")
    async def dataset_tiles(name: str, offset: int = 0, limit: int = 48) -> dict:
        _check_range(offset, 0, 2**31 - 1, "offset")
        _check_range(limit, 1, 200, "limit")
        return await run_in_threadpool(browser.tiles, name, offset, limit)

    @app.get("/api/datasets/{name}/tiles/{index}/{kind}.png")
    async def dataset_tile(name: str, index: int, kind: str) -> Response:
        _check_range(index, 0, 2**31 - 1, "index")
        if kind not in ("image", "mask"):
            raise NotFound("no such view; choose image or mask")
        return Response(await run_in_threadpool(browser.tile_png, name, index, kind), media_type="image/png")

    @app.get("/api/datasets/{name}/report")
    async def dataset_report(name: str) -> Response:
        return FileResponse(browser.report(name), media_type="text/html",
                            headers={"Content-Security-Policy": REPORT_CSP})

    return app
