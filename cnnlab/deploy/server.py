"""`cnnlab serve`: one static page and a JSON API that classify and explain uploaded images.

Routes: `GET /` (the page), `GET /healthz`, `GET /api/models`, `POST /api/predict` and
`POST /api/explain` (the image file's bytes as the request body, or as the `file` part of a
`multipart/form-data` form; `model`, `topk` and `method` as query parameters), `GET
/openapi.json` and FastAPI's `/docs`.

Safe by default: the server binds to 127.0.0.1; request bodies are capped before they are read
(`limits.BodySizeLimit`); uploads are checked from their header and decoded in memory, their
file names never seen (`uploads`); networks are loaded at start and chosen by name, never by a
path from a request (`served`); predictions that arrive together run as one batch (`batching`),
explanations in a bounded pool; a request that would wait too long gets 503.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from importlib.resources import files

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from cnnlab import __version__
from cnnlab.deploy.batching import DynamicBatcher
from cnnlab.deploy.limits import BodySizeLimit, InferencePool, ServerBusy
from cnnlab.deploy.served import ServedModel
from cnnlab.deploy.uploads import UploadError
from cnnlab.errors import CnnlabError, OptionError
from cnnlab.explain import METHODS

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 10_000_000
DEFAULT_WORKERS = 2
DEFAULT_QUEUE = 32
DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_QUEUE_TIMEOUT_S = 5.0
DEFAULT_METHOD = "gradcam"
FILE_FIELD = "file"
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image file (JPEG, PNG, GIF, BMP, WebP or TIFF): its bytes as the "
        f"body, or a form whose file part is named '{FILE_FIELD}'.",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FILE_FIELD],
                }
            },
        },
    }
}
# The page is self-contained: inline script and style, images from uploads and data: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src blob: data:; connect-src 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def create_app(
    models: dict[str, ServedModel],
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    workers: int = DEFAULT_WORKERS,
    queue: int = DEFAULT_QUEUE,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
) -> FastAPI:
    """The FastAPI application serving `models` (name -> model).

    Predictions are batched per model (`batching.DynamicBatcher`: up to `max_batch` images,
    at most `queue` batches waiting, none longer than `queue_timeout_s`); explanations run one
    request at a time on the bounded pool of `workers` threads and `queue` places.
    """
    pool = InferencePool(workers, queue)
    batchers = {
        name: DynamicBatcher(
            served.predict_batch,
            pool.executor,
            max_batch=max_batch,
            wait_s=batch_wait_ms / 1000,
            queue_timeout_s=queue_timeout_s,
            capacity=max(queue, 1) * max_batch,
        )
        for name, served in models.items()
    }
    page = files("cnnlab.deploy").joinpath("static/index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(
        title="cnnlab",
        version=__version__,
        summary="Classify and explain images with trained cnnlab networks.",
        lifespan=lifespan,
    )
    app.state.batchers = batchers
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)

    def pick(name: str | None) -> ServedModel:
        served = ", ".join(models)
        if name is None:
            if len(models) == 1:
                return next(iter(models.values()))
            raise HTTPException(422, f"name a model with ?model=NAME; this server has: {served}")
        if name not in models:
            raise HTTPException(404, f"unknown model '{name}'; this server has: {served}")
        return models[name]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict:
        return {"status": "ok", "models": len(models), "busy": pool.pending}

    @app.get("/api/models", summary="The served models and the explanation methods")
    async def list_models() -> dict:
        return {
            "models": [model.describe() for model in models.values()],
            "methods": list(METHODS),
            "default_method": DEFAULT_METHOD,
        }

    @app.post("/api/predict", summary="Top classes of an uploaded image", openapi_extra=IMAGE_BODY)
    async def predict(
        request: Request,
        model: str | None = Query(None, description="A served model's name (optional if one)."),
        topk: int = Query(5, ge=1, le=100, description="How many classes to return."),
    ) -> dict:
        batcher = batchers[pick(model).name]
        batcher.arriving += 1
        try:
            data = await read_upload(request)
        finally:
            batcher.arriving -= 1
        return await batcher.predict(data, topk)

    @app.post(
        "/api/explain",
        summary="Top classes and a heat map of where the network looked",
        openapi_extra=IMAGE_BODY,
    )
    async def explain(
        request: Request,
        model: str | None = Query(None, description="A served model's name (optional if one)."),
        method: str = Query(DEFAULT_METHOD, description=f"One of: {', '.join(METHODS)}."),
        topk: int = Query(5, ge=1, le=100, description="How many classes to return."),
    ) -> dict:
        served = pick(model)
        if method not in METHODS:
            raise HTTPException(
                422, f"unknown method '{method}'; choose one of: {', '.join(METHODS)}"
            )
        return await pool.run(served.explain, await read_upload(request), method, topk)

    return app


async def read_upload(request: Request) -> bytes:
    """The uploaded file's bytes: the body itself, or the one file part of a multipart form.

    Both arrive through the body cap (`BodySizeLimit`); the bytes then go through the same
    header checks and decoding (`uploads`). A form's file part is the one named `file`, or
    else its only file part; a form with none, or with several and none named `file`, is
    refused with 400.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return await request.body()
    async with request.form() as form:
        files = [
            (name, value) for name, value in form.multi_items() if isinstance(value, UploadFile)
        ]
        named = [upload for name, upload in files if name == FILE_FIELD]
        chosen = named if named else [upload for _, upload in files]
        if len(chosen) != 1:
            found = "no file part" if not chosen else f"{len(chosen)} file parts"
            raise UploadError(
                400,
                f"the form has {found}; send one image in a field named '{FILE_FIELD}' "
                f"(curl -F {FILE_FIELD}=@photo.jpg)",
            )
        return await chosen[0].read()


def _add_error_handlers(app: FastAPI) -> None:
    """A refused upload, a full pool and any other user-caused error: one JSON line each."""

    @app.exception_handler(UploadError)
    async def refused_upload(_request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(ServerBusy)
    async def busy(_request: Request, _error: ServerBusy) -> JSONResponse:
        detail = "the server is busy; retry in a moment"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(CnnlabError)
    async def refused(_request: Request, error: CnnlabError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` and listening (port 0: a free port the system picks).

    Binding before uvicorn starts lets the caller announce the real port, and a busy port or an
    address this machine does not have is one `OptionError` line instead of uvicorn's exit.
    The socket is made from `getaddrinfo`'s answer, protocol TCP included, as asyncio's own
    servers are: asyncio turns Nagle's algorithm off only on connections of such a socket, and
    with it on, each answer on a kept-alive connection waited about 40 ms for a delayed ACK.
    """
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
        return sock
    except OSError as error:
        if sock is not None:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise OptionError(f"port {port} is in use; choose another with --port") from None
        reason = error.strerror or type(error).__name__
        raise OptionError(f"cannot listen on {host}:{port} ({reason}); check --host") from None


def run_server(app: FastAPI, sock: socket.socket, workers: int) -> None:
    """Serve `app` with uvicorn on the listening `sock`; each inference worker gets an equal
    share of the CPU cores.

    PyTorch's intra-op threads are per calling thread: two workers with all cores each would
    oversubscribe the machine, and small networks then slow down many times over.
    """
    import torch
    import uvicorn

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
