"""Load on `cnnlab serve`: latency one request at a time, then floods of concurrent requests.

A `lenet5_modern` checkpoint is served on a free loopback port (never any other address) by
`python -m cnnlab serve` with its defaults (2 workers, a queue of 32). Then, for predict and
for explain (Grad-CAM), with an MNIST digit (or a synthetic one without the shared data):
  latency  requests one after another: p50/p99;
  flood    FLOOD requests at once, twice: requests/s, answers by status, errors other than 503;
  memory   the server's resident memory at start, after warm-up and after each flood round.
Targets: predict p50 < 20 ms, explain p50 < 100 ms, no error other than 503 in the floods, and
no memory growth from the first flood round to the second (under 2%).

Usage: python bench/serve_load.py [--flood 200] [--sequential 100]
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


def digit_png() -> bytes:
    """The first MNIST test digit as a PNG, or a synthetic stroke without the shared data."""
    images = SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    if images.exists():
        with gzip.open(images) as file:
            pixels = np.frombuffer(file.read(16 + 784)[16:], np.uint8).reshape(28, 28)
    else:
        pixels = np.zeros((28, 28), np.uint8)
        pixels[4:24, 13:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_checkpoint(path: Path) -> None:
    model = create_model("lenet5_modern")
    save_checkpoint(
        path,
        {
            "model_name": model.model_name,
            "model_options": model.model_options,
            "model_state": model.state_dict(),
            "classes": [str(digit) for digit in range(10)],
            "mean": [0.1307],
            "std": [0.3081],
            "image_shape": [1, 28, 28],
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


async def flood(url: str, route: str, image: bytes, count: int) -> dict:
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
        "p99_ms_answered": percentile(served, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=200, help="concurrent requests per flood")
    parser.add_argument("--sequential", type=int, default=100, help="requests per latency run")
    args = parser.parse_args()
    wait_for_quiet_machine(max_load=3.0, timeout=60)
    image = digit_png()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "lenet5_modern.pt"
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
            floods = {}
            for round_ in (1, 2):
                for name, route in ROUTES.items():
                    floods[f"{name} round {round_}"] = asyncio.run(
                        flood(url, route, image, args.flood)
                    )
                time.sleep(2)
                memory[f"after_flood_{round_}"] = resident_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)

    latency_ms = {
        name: {"p50": percentile(times, 50), "p99": percentile(times, 99)}
        for name, times in latency.items()
    }
    print_table(
        f"one request at a time ({args.sequential} each)",
        ["route", "p50 ms", "p99 ms"],
        [(name, values["p50"], values["p99"]) for name, values in latency_ms.items()],
    )
    print_table(
        f"{args.flood} concurrent requests",
        ["flood", "req/s", "answered/s", "statuses", "p50 ms (200s)", "p99 ms (200s)"],
        [
            (
                name,
                r["requests_per_s"],
                r["answered_per_s"],
                r["statuses"],
                r["p50_ms_answered"],
                r["p99_ms_answered"],
            )
            for name, r in floods.items()
        ],
    )
    print_table("server resident memory", ["when", "MB"], list(memory.items()))
    growth = (memory["after_flood_2"] - memory["after_flood_1"]) / memory["after_flood_1"]
    targets = [
        Target.at_most("predict p50", latency_ms["predict"]["p50"], 20, " ms"),
        Target.at_most("explain (Grad-CAM) p50", latency_ms["explain"]["p50"], 100, " ms"),
        Target.at_most(
            "flood errors other than 503", sum(r["errors"] for r in floods.values()), 0, ""
        ),
        Target.at_most("memory growth, flood round 1 -> 2", growth * 100, 2, " %"),
    ]
    results = {"latency_ms": latency_ms, "floods": floods, "memory_mb": memory}
    print_summary("serve_load", targets, results, provenance({"weights": "initial, seed 0"}))


if __name__ == "__main__":
    run_main(main)
