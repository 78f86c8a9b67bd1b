"""Load on `cnnlab serve`: latency one request at a time, then bursts of concurrent requests.

A `resnet20` checkpoint for 64x64 RGB images is served on a free loopback port (never any other
address) by `python -m cnnlab serve` with its defaults (2 workers, predictions batched up to 8,
a queue of 32). Then, for predict and for explain (Grad-CAM), with an MNIST digit as a 64x64 RGB
PNG (or a synthetic one without the shared data):
  latency  requests one after another: p50/p99, and the sequential rate (1 / mean latency);
  burst    BURST requests at once, twice: answers by status, answered/s, p95 of the answered;
  memory   the server's resident memory at start, after warm-up and after each burst round.
Targets: every predict request of a burst answered 200, with p95 < 5 s; predict throughput under
the burst >= 3x the sequential rate; predict p50 <= 12.8 ms (the unbatched server's);
explain p50 < 100 ms; no error other than 503 (explain's bounded queue) in the bursts; no
memory growth from the first burst round to the second (under 2%).

Usage: python bench/serve_load.py [--burst 200] [--sequential 100]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from common import (
    REPO_ROOT,
    SHARED,
    Target,
    print_summary,
    print_table,
    provenance,
    run_main,
    wait_for_quiet_machine,
)
from PIL import Image

from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model

ROUTES = {"predict": "/api/predict", "explain": "/api/explain?method=gradcam"}
PNG = {"Content-Type": "image/png"}


MODEL, SIZE = "resnet20", 64


def digit_png() -> bytes:
    """The first MNIST test digit as a 64x64 RGB PNG, or a synthetic stroke without the data."""
    images = SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    if images.exists():
        with gzip.open(images) as file:
            pixels = np.frombuffer(file.read(16 + 784)[16:], np.uint8).reshape(28, 28)
    else:
        pixels = np.zeros((28, 28), np.uint8)
        pixels[4:24, 13:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize((SIZE, SIZE)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_checkpoint(path: Path) -> None:
    model = create_model(MODEL)
    save_checkpoint(
        path,
        {
            "model_name": model.model_name,
            "model_options": model.model_options,
            "model_state": model.state_dict(),
            "classes": [str(digit) for digit in range(10)],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "image_shape": [3, SIZE, SIZE],
        },
    )


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "cnnlab", "serve", str(checkpoint), "--port", str(port)]
    environment = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not start within 300 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def sequential(url: str, route: str, image: bytes, count: int) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.post(route, content=image, headers=PNG).raise_for_status()
            times.append(time.perf_counter() - start)
    return times


async def burst(url: str, route: str, image: bytes, count: int) -> dict:
    """`count` requests at once, each on its own connection; answers by status and timings."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one() -> tuple[str, float]:
            start = time.perf_counter()
            try:
                answer = await client.post(route, content=image, headers=PNG)
                outcome = str(answer.status_code)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            return outcome, time.perf_counter() - start

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - start
    statuses = Counter(outcome for outcome, _ in outcomes)
    served = [seconds for outcome, seconds in outcomes if outcome == "200"]
    return {
        "requests_per_s": count / elapsed,
        "answered_per_s": len(served) / elapsed,
        "statuses": dict(statuses),
        "errors": sum(n for outcome, n in statuses.items() if outcome not in ("200", "503")),
        "p50_ms_answered": percentile(served, 50),
        "p95_ms_answered": percentile(served, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200, help="concurrent requests per burst")
    parser.add_argument("--sequential", type=int, default=100, help="requests per latency run")
    args = parser.parse_args()
    wait_for_quiet_machine(max_load=3.0, timeout=60)
    image = digit_png()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"{MODEL}.pt"
        write_checkpoint(checkpoint)
        server, url = start_server(checkpoint)
        try:
            memory = {"start": resident_mb(server.pid)}
            for route in ROUTES.values():
                sequential(url, route, image, 10)  # warm-up
            memory["after_warmup"] = resident_mb(server.pid)
            latency = {
                name: sequential(url, route, image, args.sequential)
                for name, route in ROUTES.items()
            }
            bursts = {}
            for round_ in (1, 2):
                for name, route in ROUTES.items():
                    bursts[f"{name} round {round_}"] = asyncio.run(
                        burst(url, route, image, args.burst)
                    )
                time.sleep(2)
                memory[f"after_burst_{round_}"] = resident_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)

    latency_ms = {
        name: {"p50": percentile(times, 50), "p99": percentile(times, 99)}
        for name, times in latency.items()
    }
    sequential_rate = len(latency["predict"]) / sum(latency["predict"])
    print_table(
        f"one request at a time ({args.sequential} each)",
        ["route", "p50 ms", "p99 ms"],
        [(name, values["p50"], values["p99"]) for name, values in latency_ms.items()],
    )
    print_table(
        f"{args.burst} concurrent requests",
        ["burst", "req/s", "answered/s", "statuses", "p50 ms (200s)", "p95 ms (200s)"],
        [
            (
                name,
                r["requests_per_s"],
                r["answered_per_s"],
                r["statuses"],
                r["p50_ms_answered"],
                r["p95_ms_answered"],
            )
            for name, r in bursts.items()
        ],
    )
    print_table("server resident memory", ["when", "MB"], list(memory.items()))
    growth = (memory["after_burst_2"] - memory["after_burst_1"]) / memory["after_burst_1"]
    predict_bursts = [r for name, r in bursts.items() if name.startswith("predict")]
    targets = [
        Target.at_most(
            "predict burst requests not answered 200",
            sum(args.burst - r["statuses"].get("200", 0) for r in predict_bursts),
            0,
            "",
        ),
        Target.at_most(
            "predict burst p95 of the answered",
            max(r["p95_ms_answered"] for r in predict_bursts),
            5000,
            " ms",
        ),
        Target.at_least(
            "predict burst throughput / sequential rate",
            min(r["answered_per_s"] for r in predict_bursts) / sequential_rate,
            3,
            note=f"sequential {sequential_rate:.1f} req/s",
        ),
        Target.at_most("predict p50", latency_ms["predict"]["p50"], 12.8, " ms"),
        Target.at_most("explain (Grad-CAM) p50", latency_ms["explain"]["p50"], 100, " ms"),
        Target.at_most(
            "burst errors other than 503", sum(r["errors"] for r in bursts.values()), 0, ""
        ),
        Target.at_most("memory growth, burst round 1 -> 2", growth * 100, 2, " %"),
    ]
    results = {
        "latency_ms": latency_ms,
        "sequential_rate_per_s": sequential_rate,
        "bursts": bursts,
        "memory_mb": memory,
    }
    print_summary("serve_load", targets, results, provenance({"weights": "initial, seed 0"}))


if __name__ == "__main__":
    run_main(main)
