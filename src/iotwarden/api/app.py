"""The FastAPI application: REST API under ``/api``, live events, Prometheus metrics and the console at ``/``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from iotwarden import __version__
from iotwarden.api.auth import require
from iotwarden.api.backend import ApiError, Backend
from iotwarden.api.events import EventHub, StorePoller, format_event
from iotwarden.api.metrics import ApiMetrics
from iotwarden.api.routes import router
from iotwarden.errors import StoreError

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
KEEPALIVE = 15.0
# The console is plain files; its scripts and styles come only from this server.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"

require_viewer = Depends(require("viewer"))


def create_app(
    store_path: str | os.PathLike[str],
    *,
    state_path: str | os.PathLike[str] | None = None,
    policy_path: str | os.PathLike[str] | None = None,
    false_positive_ttl: float | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> FastAPI:
    """Build the app for one store; see docs/api.md for the endpoints and roles."""
    options: dict[str, Any] = {"state_path": state_path, "policy_path": policy_path}
    if false_positive_ttl is not None:
        options["false_positive_ttl"] = false_positive_ttl
    backend = Backend(store_path, **options)
    hub = EventHub()
    metrics = ApiMetrics(backend, hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        task = asyncio.create_task(_poll_store(backend, hub, poll_interval))
        logger.info("serving store %s", backend.path)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            logger.info("stopped serving store %s", backend.path)
            # The backend stays open: a test client may start the app again. Whoever
            # created the app closes it with app.state.backend.close().

    app = FastAPI(
        title="iotwarden",
        version=__version__,
        description="Alerts, incidents, devices, response actions, suppressions and the ledger of an iotwarden store. "
        "Every endpoint except /api/health needs 'Authorization: Bearer <token>' (see docs/api.md).",
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.state.hub = hub
    app.state.metrics = metrics
    app.include_router(router)
    _add_error_handlers(app)
    _add_system_routes(app, metrics)
    _add_console(app)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(template).observe(time.perf_counter() - started)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if not request.url.path.startswith(("/api/", "/metrics", "/docs", "/openapi")):
            response.headers.setdefault("Content-Security-Policy", _CSP)
        return response

    return app


async def _poll_store(backend: Backend, hub: EventHub, interval: float) -> None:
    poller = await asyncio.to_thread(StorePoller, backend.path)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                for kind, data in await asyncio.to_thread(poller.poll):
                    hub.publish(kind, data)
            except sqlite3.Error as error:
                logger.warning("polling the store failed: %s", error)
    finally:
        poller.close()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": str(error), "field": error.field}, status_code=error.status)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> JSONResponse:
        logger.error("store error on %s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": f"the store is unavailable: {error}", "field": None}, status_code=503)

    @app.exception_handler(sqlite3.OperationalError)
    async def busy(request: Request, error: sqlite3.OperationalError) -> JSONResponse:
        logger.error("SQLite error on %s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": f"the store is busy or unavailable ({error}); retry", "field": None}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            problems.append({"field": _field_name(item.get("loc", ())), "message": item.get("msg", "invalid")})
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return JSONResponse({"detail": f"{first['field']}: {first['message']}", "field": first["field"], "errors": problems}, status_code=422)


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    """Return a validation error's field as ``name.sub[2]``; a bare position (a JSON syntax error) is the body."""
    name = ""
    for part in location:
        if part in ("body", "query", "path", "header") and not name:
            continue
        if isinstance(part, int):
            if name:
                name += f"[{part}]"
            continue
        name = f"{name}.{part}" if name else str(part)
    return name or "body"


def _add_system_routes(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.get("/api/health", tags=["system"], summary="Liveness and store check; needs no token")
    def health(request: Request) -> dict[str, Any]:
        backend: Backend = request.app.state.backend
        with backend.lock:
            backend.store.connection.execute("SELECT 1").fetchone()
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["system"], summary="Prometheus metrics of the server and the store (viewer)",
             response_class=Response, dependencies=[require_viewer])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/events", tags=["system"], summary="Server-sent events: alert, action, triage, suppressions (viewer)",
             response_class=StreamingResponse, dependencies=[require_viewer])
    async def events(request: Request) -> StreamingResponse:
        hub: EventHub = request.app.state.hub
        queue = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 3000\n: connected\n\n"
                while True:
                    if await request.is_disconnected():
                        break
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield format_event(event)
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _add_console(app: FastAPI) -> None:
    folder = resources.files("iotwarden.console")
    index = folder / "index.html"

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(str(index), media_type="text/html")

    app.mount("/console", StaticFiles(directory=str(folder)), name="console")
