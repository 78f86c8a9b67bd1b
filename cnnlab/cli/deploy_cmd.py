"""`cnnlab export` writes an ONNX model checked against PyTorch; `cnnlab serve` runs the web page."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnlab.cli import app, console, error_console
from cnnlab.engine.checkpoint import resolve_checkpoint_path
from cnnlab.errors import OptionError

CHECKPOINT_HELP = "A checkpoint file, or a run folder (its best.pt, else last.pt)."


@app.command("export")
def export_command(
    checkpoint: Path = typer.Argument(..., help=CHECKPOINT_HELP),
    out: str | None = typer.Option(  # a str: Path would drop the trailing slash of a folder
        None,
        "--out",
        "-o",
        help="The .onnx file to write, or a folder to write MODEL.onnx into (default: beside the "
        "checkpoint).",
    ),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    opset: int | None = typer.Option(
        None, "--opset", help="ONNX opset (18 or later; default: the exporter's)."
    ),
    dynamic_batch: bool = typer.Option(
        True, "--dynamic-batch/--fixed-batch", help="Any batch size, or exactly one image."
    ),
    include_preprocessing: bool = typer.Option(
        False,
        "--include-preprocessing",
        help="The graph takes uint8 images and normalizes them (else: float input, stats in metadata).",
    ),
) -> None:
    """Export a trained network to ONNX and check it against PyTorch in onnxruntime."""
    if format != "onnx":
        raise OptionError(f"unknown export format '{format}'; choose one of: onnx")
    from cnnlab.deploy.export import ROUNDING_FACTOR, TOLERANCE, export_onnx

    checkpoint_file = resolve_checkpoint_path(checkpoint)
    target = out if out is not None else checkpoint_file.with_suffix(".onnx")
    report = export_onnx(
        checkpoint_file,
        target,
        opset=opset,
        dynamic_batch=dynamic_batch,
        include_preprocessing=include_preprocessing,
    )
    inputs = "uint8 images" if report.include_preprocessing else "normalized float32 images"
    batch = "any batch size" if report.dynamic_batch else "batch of 1"
    console.print(
        f"exported {report.model_name} to {report.path} ({report.size_bytes / 1e6:.1f} MB, "
        f"opset {report.opset}, {inputs}, {batch})"
    )
    console.print(
        f"onnxruntime vs PyTorch on {report.images_checked} images: max abs diff "
        f"{report.max_abs_diff:.2e} (limit {TOLERANCE:g})"
    )
    if report.float32_rounding is not None:
        console.print(
            f"[yellow]accepted:[/] over {TOLERANCE:g} but within {ROUNDING_FACTOR:g}x PyTorch's "
            f"own float32 rounding on these images ({report.float32_rounding:.2e} from float64)"
        )


@app.command("serve")
def serve_command(
    checkpoints: list[str] = typer.Argument(
        ..., help="Checkpoints or run folders to serve, each as PATH or NAME=PATH."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    max_body_mb: float = typer.Option(10.0, "--max-body-mb", min=0.001, help="Largest upload, MB."),
    workers: int = typer.Option(2, "--workers", min=1, help="Inference threads."),
    queue: int = typer.Option(
        32,
        "--queue",
        min=0,
        help="Explanations that may wait, and prediction batches that may wait; more get 503.",
    ),
    max_batch: int = typer.Option(
        8,
        "--max-batch",
        min=1,
        help="Predictions that arrive together run as one batch of up to N.",
    ),
    batch_wait_ms: float = typer.Option(
        2.0,
        "--batch-wait-ms",
        min=0.0,
        help="How long a batch may wait for requests still arriving (a lone request never waits).",
    ),
    queue_timeout: float = typer.Option(
        5.0,
        "--queue-timeout",
        min=0.001,
        help="Seconds a prediction may wait for its batch; longer gets 503 with Retry-After.",
    ),
) -> None:
    """Serve a web page and a JSON API that classify and explain uploaded images."""
    from cnnlab.deploy.served import load_served_models
    from cnnlab.deploy.server import create_app, is_loopback, listen, run_server

    models = load_served_models(checkpoints, copies=workers)
    app_ = create_app(
        models,
        max_body_bytes=int(max_body_mb * 1e6),
        workers=workers,
        queue=queue,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        queue_timeout_s=queue_timeout,
    )
    if not is_loopback(host):
        error_console.print(
            f"[bold yellow]warning:[/] binding to {host}: anyone who can reach this machine can "
            "use the server (it has no authentication); use --host 127.0.0.1 to keep it local",
            highlight=False,
            soft_wrap=True,
        )
    sock = listen(host, port)
    address = f"[{host}]" if ":" in host else host
    bound_port = sock.getsockname()[1]
    names = ", ".join(models)
    console.print(
        f"serving {names} on http://{address}:{bound_port}/ (API docs at /docs; Ctrl-C stops)"
    )
    run_server(app_, sock, workers)
