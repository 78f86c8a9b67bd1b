"""Dynamic batching: predict requests that arrive together share one forward pass.

As TorchServe and Triton do, `DynamicBatcher` queues each request's upload and runs up to
`max_batch` of them through the network at once. It waits for a batch to fill only while other
requests are still arriving (reading their bodies), and then at most `wait_s`, so a lone request
is never delayed; while one batch runs, the next one gathers. A request that waited longer than
`queue_timeout_s` when its batch forms is answered 503 (`ServerBusy`) instead of being run late,
and at most `capacity` requests wait at once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from cnnlab.deploy.limits import ServerBusy

RunBatch = Callable[[Sequence[tuple[bytes, int]]], list[object]]


@dataclass
class _Waiting:
    data: bytes
    topk: int
    arrived: float
    answer: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Collects uploads into batches for `run_batch` (on `executor`), one batch at a time.

    `run_batch([(data, topk), ...])` returns one answer per upload, an exception standing for a
    refused one (`UploadError`), so a bad image fails only its own request.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        *,
        max_batch: int,
        wait_s: float,
        queue_timeout_s: float,
        capacity: int,
    ) -> None:
        if max_batch < 1 or wait_s < 0 or queue_timeout_s <= 0 or capacity < 1:
            raise ValueError("need max_batch >= 1, wait_s >= 0, queue_timeout_s > 0, capacity >= 1")
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue_timeout_s = queue_timeout_s
        self.capacity = capacity
        self.waiting: collections.deque[_Waiting] = collections.deque()
        self.arriving = 0  # requests still reading their uploads: a batch may wait for them
        self.batch_sizes: list[int] = []  # of every batch run, for tests and benchmarks
        self._draining: asyncio.Task | None = None

    async def predict(self, data: bytes, topk: int) -> object:
        """The answer for one upload, computed in a batch with the others waiting beside it."""
        if len(self.waiting) >= self.capacity:
            raise ServerBusy
        loop = asyncio.get_running_loop()
        waiting = _Waiting(data, topk, loop.time(), loop.create_future())
        self.waiting.append(waiting)
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        return await waiting.answer

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                if len(self.waiting) < self.max_batch and self.arriving and self.wait_s:
                    await asyncio.sleep(self.wait_s)  # more of this burst is on its way
                count = min(self.max_batch, len(self.waiting))
                batch = [self.waiting.popleft() for _ in range(count)]
                now = loop.time()
                for late in (w for w in batch if now - w.arrived > self.queue_timeout_s):
                    if not late.answer.done():
                        late.answer.set_exception(ServerBusy())
                batch = [w for w in batch if not w.answer.done()]  # late, or the client left
                if not batch:
                    continue
                self.batch_sizes.append(len(batch))
                try:
                    answers = await loop.run_in_executor(
                        self.executor, self.run_batch, [(w.data, w.topk) for w in batch]
                    )
                except Exception as error:  # a bug: every request of the batch hears of it
                    answers = [error] * len(batch)
                for waiting, answer in zip(batch, answers, strict=True):
                    if waiting.answer.done():
                        continue
                    if isinstance(answer, BaseException):
                        waiting.answer.set_exception(answer)
                    else:
                        waiting.answer.set_result(answer)
        finally:
            self._draining = None
