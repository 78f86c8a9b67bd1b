"""Dynamic batching of predictions: bursts answered in shared forward passes, with the answers a
request alone gets; a bad image fails only its own request; a request that waited too long is
answered 503 with Retry-After."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import upload_files as files
from zoo_checkpoints import make_checkpoint

from cnnlab.deploy.batching import DynamicBatcher
from cnnlab.deploy.limits import ServerBusy
from cnnlab.deploy.served import ServedModel, load_served_models
from cnnlab.deploy.server import create_app
from cnnlab.deploy.uploads import UploadError

IMAGES = [files.gray_png(seed=seed) for seed in range(20)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("batch") / "best.pt", "lenet5_modern", 28)


@pytest.fixture(scope="module")
def served(checkpoint: Path) -> ServedModel:
    return load_served_models([str(checkpoint)], copies=1)["lenet5_modern"]


def batcher_for(served: ServedModel, executor, **options) -> DynamicBatcher:
    settings = {"max_batch": 8, "wait_s": 0.0, "queue_timeout_s": 60.0, "capacity": 64}
    return DynamicBatcher(served.predict_batch, executor, **(settings | options))


def assert_same_answer(batched: dict, alone: dict) -> None:
    assert [row["class"] for row in batched["top"]] == [row["class"] for row in alone["top"]]
    for row, expected in zip(batched["top"], alone["top"], strict=True):
        assert row["probability"] == pytest.approx(expected["probability"], abs=1e-5)


def test_a_burst_runs_in_full_batches_with_the_answers_of_single_requests(served) -> None:
    alone = [served.predict(image, 3) for image in IMAGES]

    async def burst() -> tuple[list, list[int]]:
        with ThreadPoolExecutor(1) as executor:
            batcher = batcher_for(served, executor)
            # Every request joins the queue before the batcher first runs (asyncio's FIFO order).
            answers = await asyncio.gather(*(batcher.predict(image, 3) for image in IMAGES))
            return answers, batcher.batch_sizes

    answers, sizes = asyncio.run(burst())
    assert sizes == [8, 8, 4]
    for batched, expected in zip(answers, alone, strict=True):
        assert_same_answer(batched, expected)


def test_a_bad_upload_fails_only_its_own_request(served) -> None:
    uploads = [IMAGES[0], b"not an image at all", IMAGES[1]]

    async def burst() -> list:
        with ThreadPoolExecutor(1) as executor:
            batcher = batcher_for(served, executor)
            requests = (batcher.predict(data, 2) for data in uploads)
            return await asyncio.gather(*requests, return_exceptions=True)

    first, refused, last = asyncio.run(burst())
    assert isinstance(refused, UploadError) and refused.status == 415
    assert_same_answer(first, served.predict(IMAGES[0], 2))
    assert_same_answer(last, served.predict(IMAGES[1], 2))


def test_a_lone_request_does_not_wait_for_a_batch(served) -> None:
    async def alone() -> dict:
        with ThreadPoolExecutor(1) as executor:
            batcher = batcher_for(served, executor, wait_s=3600.0)  # waits only for arrivals
            return await asyncio.wait_for(batcher.predict(IMAGES[0], 1), timeout=600)

    assert alone_answer(asyncio.run(alone()))


def alone_answer(answer: dict) -> bool:
    return answer["model"] == "lenet5_modern" and len(answer["top"]) == 1


def test_a_request_that_waited_past_the_queue_timeout_gets_503(served) -> None:
    release = threading.Event()

    async def scenario() -> tuple[object, object]:
        with ThreadPoolExecutor(1) as executor:
            executor.submit(release.wait)  # the one worker is busy until released
            batcher = batcher_for(served, executor, max_batch=1, queue_timeout_s=1.0)
            first = asyncio.ensure_future(batcher.predict(IMAGES[0], 1))  # its batch forms now
            await asyncio.sleep(0)
            second = asyncio.ensure_future(batcher.predict(IMAGES[1], 1))  # waits behind it
            await asyncio.sleep(1.5)  # the second has now waited longer than the timeout
            release.set()
            return tuple(await asyncio.gather(first, second, return_exceptions=True))

    first, second = asyncio.run(scenario())
    assert alone_answer(first)
    assert isinstance(second, ServerBusy)


def test_the_api_answers_a_burst_of_uploads_all_with_200(served, checkpoint: Path) -> None:
    # Room for 5 batches of 4 waiting: the 20 requests all get answers, none a 503.
    models = load_served_models([str(checkpoint)], copies=1)
    app = create_app(models, workers=1, queue=5, max_batch=4)
    alone = [served.predict(image, 3) for image in IMAGES]

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            requests = [http.post("/api/predict?topk=3", content=image) for image in IMAGES]
            return await asyncio.gather(*requests)

    answers = asyncio.run(burst())
    assert [answer.status_code for answer in answers] == [200] * len(IMAGES)
    for answer, expected in zip(answers, alone, strict=True):
        assert_same_answer(answer.json(), expected)
