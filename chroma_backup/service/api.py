"""The daemon's one HTTP server (FastAPI on uvicorn): metrics, liveness, a JSON API over the
operations layer, and a status page.

Read-only endpoints are open on the bound interface (HTTP_HOST); every POST needs
``Authorization: Bearer <API_TOKEN>`` and answers 403 while API_TOKEN is empty.  Backups and
restores asked for over HTTP run as tasks (``tasks.TaskRunner``): 202 with a task id, then
``GET /api/v1/tasks/{id}``.  Every error is JSON with a message; never a traceback or a secret.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from chroma_backup.app.names import Where
from chroma_backup.app.operations import Operations
from chroma_backup.core.diff import LIVE
from chroma_backup.errors import (
    BackupError,
    CollectionBusy,
    CollectionExists,
    CollectionNotFound,
    ConfigError,
    SnapshotNotFound,
    UsageError,
    first_line,
)
from chroma_backup.service.metrics import Metrics
from chroma_backup.service.tasks import TaskRunner
from chroma_backup.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TEMPLATES = Path(__file__).resolve().parent / "templates"
LOOP_STALE_SECONDS = 30.0  # /healthz fails when the scheduler loop has not turned for this long

_STATUS_OF = {
    SnapshotNotFound: 404,
    CollectionNotFound: 404,
    CollectionBusy: 409,
    CollectionExists: 409,
    UsageError: 400,
    ConfigError: 400,
}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BackupRequest(BaseModel):
    collections: list[str] | None = Field(
        default=None, description="collections to back up (default: CHROMA_COLLECTION_NAME)"
    )


class RestoreRequest(BaseModel):
    collection: str = Field(description="source collection (DATABASE/NAME where databases share names)")
    snapshot: int | None = Field(default=None, ge=1, description="snapshot id (default: the latest complete)")
    at: datetime | None = Field(default=None, description="newest complete snapshot finished at or before this time")
    target: str | None = Field(default=None, description="target collection (default: NEW_COLLECTION_NAME)")
    overwrite: bool = False
    dry_run: bool = False


class ServerRestoreRequest(BaseModel):
    collections: list[str] | None = Field(
        default=None, description="collections to restore (default: every backed-up one of the selection)"
    )
    at: datetime | None = Field(
        default=None, description="each collection's newest complete snapshot at or before this time"
    )
    name_template: str = Field(default="{name}", description="target names, {name} expanded")
    overwrite: bool = False
    skip_existing: bool = False
    dry_run: bool = False
    parallel: int | None = Field(default=None, ge=1, le=32, description="collections at once (RESTORE_PARALLEL)")


class TaskAccepted(BaseModel):
    task_id: str
    state: str
    url: str


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 500)}


def Limit(default: int) -> Any:
    return Query(default, ge=1, le=10_000, description="at most this many rows")


def _stream_diff(
    backend: Any, name: str, from_snapshot: int | None, at: datetime | None, to: str, ids: bool
) -> Iterator[bytes]:
    """The diff's JSON, written as the changes are found: the diff runs on stores of its own in a
    thread and hands each change over through a bounded queue (memory stays flat)."""
    changes: queue.Queue[Any] = queue.Queue(maxsize=1000)
    done = object()

    def produce() -> None:
        ops = Operations(backend)
        try:
            result = ops.diff(name, from_snapshot=from_snapshot, at=at, to=to, on_change=changes.put if ids else None)
            changes.put((done, {"summary": result.summary()}))
        except BackupError as error:
            changes.put((done, {"error": first_line(error)}))
        except Exception as error:  # noqa: BLE001 - the request's boundary: the stream ends with the error
            log.error("api diff unexpected %s: %s", type(error).__name__, first_line(error))
            changes.put((done, {"error": f"internal error ({type(error).__name__})"}))
        finally:
            ops.close()

    threading.Thread(target=produce, name="api-diff", daemon=True).start()
    yield b'{"changes": ['
    first = True
    while True:
        item = changes.get()
        if isinstance(item, tuple) and item[0] is done:
            yield b"], " + json.dumps(item[1])[1:].encode()
            return
        yield (b"" if first else b",") + json.dumps(item.as_json(), ensure_ascii=False).encode()
        first = False


def _utc(value: datetime | None) -> datetime | None:
    """A time from a request, UTC when it names no zone."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)


def _when(timestamp: str | None) -> str:
    """An ISO 8601 time as ``2026-11-24 03:00 UTC``."""
    if not timestamp:
        return "-"
    return datetime.fromisoformat(timestamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(0.0, time.time() - datetime.fromisoformat(timestamp).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def create_app(
    settings: Settings,
    reader: Operations,
    tasks: TaskRunner,
    metrics: Metrics,
    schedule_info: Callable[[], dict[str, str | None]],
    unreachable: Callable[[float], list[str]] = lambda _seconds: [],
) -> FastAPI:
    """The app; ``reader`` answers read-only requests (one connection, used by one request at a
    time), ``tasks`` runs POSTed work, ``unreachable(seconds)`` names the dependencies that have
    not answered for longer than that."""
    app = FastAPI(title="chroma-backup", version="1", description=__doc__, docs_url="/docs", redoc_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["when"] = _when
    read_lock = threading.Lock()

    def read(fn: Callable[[Operations], T]) -> T:
        with read_lock:
            return fn(reader)

    def require_token(authorization: str | None = Header(default=None)) -> None:
        if not settings.api_token:
            raise ApiError(403, "POST endpoints are disabled: set API_TOKEN to enable them")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), settings.api_token.encode()):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)")

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        metrics.http.labels(f"{response.status_code // 100}xx").inc()
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(BackupError)
    async def backup_error(_: Request, error: BackupError) -> JSONResponse:
        status = next((code for cls, code in _STATUS_OF.items() if isinstance(error, cls)), 500)
        return JSONResponse({"error": first_line(error)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("api unexpected %s: %s", type(error).__name__, first_line(error))
        log.debug("api unexpected error", exc_info=True)
        return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/healthz",
        summary="The daemon's loop is alive and PostgreSQL and Chroma answer",
        responses={503: {"model": ErrorBody}},
    )
    def healthz() -> JSONResponse:
        age = time.time() - metrics.loop_time()
        if age > LOOP_STALE_SECONDS:
            return JSONResponse({"error": f"scheduler loop stale for {age:.0f}s"}, status_code=503)
        down = unreachable(settings.unreachable_seconds)
        if down:
            return JSONResponse({"error": "; ".join(down)}, status_code=503)
        return JSONResponse({"status": "ok", "loop_age_seconds": round(age, 1)})

    @app.get(
        "/api/v1/collections", summary="Every selected collection: health, last snapshot, schedule", responses=ERRORS
    )
    def collections() -> list[dict[str, Any]]:
        return read(lambda ops: ops.overview(schedule_info()))

    @app.get("/api/v1/collections/{name}/snapshots", summary="A collection's snapshots, newest first", responses=ERRORS)
    def snapshots(name: str, limit: int = Limit(50)) -> list[dict[str, Any]]:
        return read(lambda ops: [s.as_json() for s in ops.snapshots(name.replace(":", "/"), limit=limit)])

    @app.get(
        "/api/v1/collections/{name}/diff",
        summary="What changed between a snapshot and another one or the live collection, streamed",
        responses=ERRORS,
    )
    def diff(
        name: str,
        from_snapshot: int | None = Query(None, alias="from", ge=1, le=2**62, description="older snapshot id"),
        at: datetime | None = Query(None, description="older snapshot: the newest complete one at or before this"),
        to: str = Query(LIVE, pattern=r"^(live|[1-9][0-9]{0,17})$", description="newer snapshot id, or live"),
        ids: bool = Query(True, description="list every changed id (else the summary alone)"),
    ) -> StreamingResponse:
        if from_snapshot is not None and at is not None:
            raise ApiError(400, "give from or at, not both")
        label = name.replace(":", "/")
        read(lambda ops: ops.snapshot_records(ops.names.single_collection(label), from_snapshot))  # 404s first
        return StreamingResponse(
            _stream_diff(reader.backend, label, from_snapshot, _utc(at), to, ids), media_type="application/json"
        )

    @app.get("/api/v1/restores", summary="Restores, newest first", responses=ERRORS)
    def restores(limit: int = Limit(50)) -> list[dict[str, Any]]:
        return read(lambda ops: ops.restores(limit=limit))

    @app.get("/api/v1/health/history", summary="Health status transitions and restores, newest first", responses=ERRORS)
    def history(collection: str | None = None, limit: int = Limit(100)) -> list[dict[str, Any]]:
        return read(lambda ops: ops.health_history(collection, limit=limit))

    @app.post(
        "/api/v1/backups",
        status_code=202,
        response_model=TaskAccepted,
        responses=ERRORS,
        dependencies=[Depends(require_token)],
        summary="Back up now (a task)",
    )
    def backup(body: BackupRequest | None = None) -> TaskAccepted:
        requested = (body.collections if body else None) or None
        names = read(lambda ops: [ops.label(ops.resolve(n)) for n in requested]) if requested else []
        _refuse_busy(names)

        def run(ops: Operations, task: Any) -> Any:
            results = ops.backup_round(requested, progress=lambda _label: task)
            failed = [r for r in results if r.status != "complete"]
            task.error = "; ".join(f"{r.collection}: {r.error}" for r in failed) or None
            return [r.as_json() for r in results]

        return _accepted(tasks.submit("backup", names, run))

    @app.post(
        "/api/v1/restores",
        status_code=202,
        response_model=TaskAccepted,
        responses=ERRORS,
        dependencies=[Depends(require_token)],
        summary="Restore a snapshot, verified (a task)",
    )
    def restore(body: RestoreRequest) -> TaskAccepted:
        if body.snapshot is not None and body.at is not None:
            raise ApiError(400, "give snapshot or at, not both")

        def plan(ops: Operations) -> tuple[str, int]:
            where = ops.resolve(body.collection, "collection")
            target = body.target or settings.target_name(where.name)
            _refuse_busy([ops.label(where), ops.label(Where(where.database, target))])
            if not body.dry_run:
                ops.check_not_busy(where, target)
            return ops.label(where), ops.snapshot_records(where, body.snapshot)

        label, records = read(plan)

        def run(ops: Operations, task: Any) -> Any:
            task.records_total = records
            result = ops.restore(
                label,
                to=body.target,
                snapshot_id=body.snapshot,
                at=_utc(body.at),
                overwrite=body.overwrite,
                dry_run=body.dry_run,
                reason="requested over HTTP",
                progress=task,
            )
            if result.differences:  # the copy is kept (records identical), as the CLI's exit 1 says
                task.error = (
                    f"{result.target} holds every record identically, but its configuration differs: "
                    + "; ".join(result.differences)
                )
            return result.as_json()

        return _accepted(tasks.submit("restore", [label], run))

    @app.post(
        "/api/v1/server-restores",
        status_code=202,
        response_model=TaskAccepted,
        responses=ERRORS,
        dependencies=[Depends(require_token)],
        summary="Restore every backed-up collection of the selection, a plan first (restore --all, a task)",
    )
    def server_restore(body: ServerRestoreRequest) -> TaskAccepted:
        if body.overwrite and body.skip_existing:
            raise ApiError(400, "give overwrite or skip_existing, not both")

        def run(ops: Operations, task: Any) -> Any:
            def on_plan(result: Any) -> None:
                task.records_total = sum(
                    item.records for item in result.plan if item.action in ("restore", "overwrite")
                )

            result = ops.restore_all(
                body.collections,
                at=_utc(body.at),
                name_template=body.name_template,
                overwrite=body.overwrite,
                skip_existing=body.skip_existing,
                dry_run=body.dry_run,
                reason="requested over HTTP",
                parallel=body.parallel,
                progress=task,
                on_plan=on_plan,
            )
            if not result.ok:
                task.error = result.refused or "; ".join(
                    f"{item.source_label}: {item.error or 'configuration differs'}"
                    for item in result.plan
                    if not item.fine
                )
            return result.as_json()

        return _accepted(tasks.submit("server_restore", ["*"], run))

    @app.get("/api/v1/tasks/{task_id}", summary="A task's state, progress and result", responses=ERRORS)
    def task(task_id: str) -> dict[str, Any]:
        found = tasks.get(task_id)
        if found is None:
            raise ApiError(404, f"no task {task_id!r} (tasks are kept in memory until the daemon restarts)")
        return found.as_json()

    @app.delete(
        "/api/v1/tasks/{task_id}",
        status_code=202,
        responses=ERRORS,
        dependencies=[Depends(require_token)],
        summary="Cancel a task: a queued one never runs, a running one stops at its next batch",
    )
    def cancel(task_id: str) -> dict[str, Any]:
        found = tasks.cancel(task_id)
        if found is None:
            raise ApiError(404, f"no task {task_id!r} (tasks are kept in memory until the daemon restarts)")
        if found.state in ("complete", "failed") or (found.state == "cancelled" and found.started_at):
            raise ApiError(409, f"task {task_id} already ended: {found.state}")
        return found.as_json()

    @app.get("/", response_class=HTMLResponse, summary="Status page", include_in_schema=False)
    def status_page(request: Request) -> HTMLResponse:
        rows = read(lambda ops: ops.overview(schedule_info()))
        for row in rows:
            snap = row["last_snapshot"]
            row["age"] = _age(snap["finished_at"] if snap else None)
        return templates.TemplateResponse(
            request,
            "status.html",
            {
                "rows": rows,
                "now": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "schedule": schedule_info(),
                "refresh": 15,
            },
        )

    def _refuse_busy(names: list[str]) -> None:
        for name in names:
            if tasks.active(name):
                raise ApiError(409, f"collection {name!r} is busy: a task for it is queued or running")

    def _accepted(task: Any) -> TaskAccepted:
        return TaskAccepted(task_id=task.task_id, state=task.state, url=f"/api/v1/tasks/{task.task_id}")

    return app


class HttpServer:
    """uvicorn in a thread, on a socket bound before the daemon goes on (a taken port is a
    configuration error, reported at start)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as error:
            self.socket.close()
            raise ConfigError(f"HTTP_PORT: cannot listen on {host}:{port}: {error.strerror}") from None
        self.socket.listen(128)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
