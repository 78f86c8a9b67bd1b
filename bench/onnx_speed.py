"""onnxruntime against PyTorch eager: resnet18 at 224x224, batch 1, on the CPU, in one run.

The network is exported with `cnnlab.deploy.export.export_onnx` (so the export is checked
against PyTorch first), then both run the same images in alternating blocks, so a busy
neighbour on shared cores slows both sides alike. Both use the same number of threads:
PyTorch's `torch.get_num_threads()` is given to onnxruntime as its intra-op threads (one
inter-op thread), and the table shows both counts.
Target: onnxruntime at least as fast as PyTorch eager (median latency ratio >= 1).

Usage: python bench/onnx_speed.py [--runs 60] [--strict]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from common import (
    Target,
    argument_parser,
    console,
    print_summary,
    print_table,
    provenance,
    run_main,
    wait_for_quiet_machine,
)

from cnnlab.deploy.export import OnnxModel, export_onnx
from cnnlab.models import create_model, model_info

MODEL, SIZE, BLOCK, WARMUP = "resnet18", 224, 10, 5


def checkpoint_state() -> dict:
    """resnet18 with its initial weights: the speed of a network does not depend on them."""
    model = create_model(MODEL)
    info = model_info(MODEL)
    return {
        "format_version": 1,
        "model_name": MODEL,
        "model_options": model.model_options,
        "model_state": model.state_dict(),
        "classes": [f"class{index}" for index in range(1000)],
        "mean": list(info.mean),
        "std": list(info.std),
        "image_shape": [3, SIZE, SIZE],
    }


def latencies(run, image: torch.Tensor, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="timed runs per side")
    args = parser.parse_args()
    state = checkpoint_state()
    wait_for_quiet_machine(max_load=3.0, timeout=60)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.onnx"
        report = export_onnx(state, path)
        threads = torch.get_num_threads()
        onnx_model = OnnxModel(path, threads=threads)
        ort_threads = onnx_model.session.get_session_options().intra_op_num_threads
        model = create_model(MODEL).eval()
        model.load_state_dict(state["model_state"])
        image = torch.randn(1, 3, SIZE, SIZE)

        def eager(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(batch)

        latencies(eager, image, WARMUP)
        latencies(onnx_model, image, WARMUP)
        timed: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        for _ in range(max(1, args.runs // BLOCK)):
            timed["pytorch"] += latencies(eager, image, BLOCK)
            timed["onnxruntime"] += latencies(onnx_model, image, BLOCK)

    medians = {side: median(times) * 1000 for side, times in timed.items()}
    ratio = medians["pytorch"] / medians["onnxruntime"]
    print_table(
        f"{MODEL} {SIZE}x{SIZE}, batch 1, PyTorch {threads} threads, onnxruntime {ort_threads}",
        ["runtime", "median ms", "runs"],
        [(side, medians[side], len(timed[side])) for side in timed],
    )
    console.print(f"export checked: max abs diff {report.max_abs_diff:.2e} over 4 images")
    targets = [Target.at_least("onnxruntime speed-up over PyTorch eager", ratio, 1.0)]
    results = {
        "median_ms": medians,
        "ratio": ratio,
        "max_abs_diff": report.max_abs_diff,
        "threads": {"pytorch": threads, "onnxruntime": ort_threads},
    }
    print_summary("onnx_speed", targets, results, provenance({"weights": "initial, seed 0"}))


if __name__ == "__main__":
    torch.manual_seed(0)
    run_main(main)
