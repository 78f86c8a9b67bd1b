"""What bounds the server's memory: a request-body cap and a bounded inference pool.

`BodySizeLimit` is plain ASGI middleware, so it runs before any framework code reads or parses
the body: a declared `Content-Length` over the cap is answered 413 at once, and a body sent
without one (chunked) is counted as it arrives and cut off at the cap. `InferencePool` runs
inference on a few threads with a bounded queue; a request that finds it full is answered 503
at once instead of holding its image in memory while it waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Result = TypeVar("Result")


class _BodyTooLarge(Exception):
    """Raised into the application when the body it is reading passes the cap."""


class BodySizeLimit:
    """ASGI middleware answering 413 to any HTTP request whose body exceeds `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        received = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:  # the application's answer to a cut-off body is replaced by 413
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:  # _BodyTooLarge, or whatever the application made of it
            if not exceeded:
                raise
        if exceeded:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        megabytes = self.max_bytes / 1e6
        body = json.dumps({"detail": f"request body over the {megabytes:g} MB limit"}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ServerBusy(Exception):
    """The inference pool and its queue are full."""


class InferencePool:
    """`workers` threads and at most `queue` waiting jobs; `run` raises `ServerBusy` beyond.

    The count is of jobs the executor holds, released when each one finishes or is cancelled
    before it starts, so a client that disconnects does not free a slot its job still uses.
    """

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"need workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers = workers
        self.capacity = workers + queue
        self.pending = 0
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="cnnlab-inference")

    async def run(self, function: Callable[..., Result], *args: Any) -> Result:
        """`function(*args)` on a worker thread, or `ServerBusy` when the pool is full."""
        if self.pending >= self.capacity:
            raise ServerBusy
        loop = asyncio.get_running_loop()
        self.pending += 1
        job = self.executor.submit(function, *args)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(job)

    def _release(self) -> None:
        self.pending -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["BodySizeLimit", "InferencePool", "ServerBusy"]
