"""ONNX export of a trained checkpoint, checked against PyTorch in onnxruntime; `OnnxModel` runs it.

`export_onnx` uses PyTorch's current exporter (`torch.onnx.export(..., dynamo=True)`, built on
onnxscript). The network is exported in eval mode, so auxiliary heads are not in the graph.
The example batch has two images and the batch dimension is declared dynamic: torch.export
specializes a batch of one to a constant. The graph takes either normalized float32 images
(the training normalization is written into the model's metadata) or, with
`include_preprocessing`, uint8 images that it normalizes itself.

Before anything is written, the exported graph runs in onnxruntime on a few random images of
other batch sizes and its logits are compared with PyTorch's; an export off by more than
`TOLERANCE` is refused, unless PyTorch's float32 logits are themselves that far from float64
ones (deep networks) and onnxruntime is within `ROUNDING_FACTOR` times that rounding error. `OnnxModel` wraps an exported file as an `nn.Module`, so `cnnlab
predict` classifies with it exactly as with a checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab import __version__
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.errors import CheckpointError, ExportError, OptionError
from cnnlab.fileio import atomic_write

TOLERANCE = 1e-4  # largest accepted |onnxruntime - PyTorch| over the logits
# ... unless PyTorch's own float32 logits are that far from float64 ones (deep networks on noise
# images): onnxruntime is then accepted within this many times PyTorch's own rounding error.
ROUNDING_FACTOR = 2.0
MIN_OPSET = 18  # the dynamo exporter writes opset 18 and later
EXAMPLE_BATCH = 2
CHECK_BATCHES_DYNAMIC = (1, 3)  # batch sizes other than the example's: the dimension is free
CHECK_BATCHES_FIXED = (1, 1)
INPUT_NAME, OUTPUT_NAME = "images", "logits"
UINT8_INPUT, NORMALIZED_INPUT = "uint8", "normalized float32"
INSTALL_HINT = "install the ONNX extra: pip install 'cnnlab[onnx]'"


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how closely onnxruntime reproduced PyTorch."""

    path: Path
    model_name: str
    opset: int
    dynamic_batch: bool
    include_preprocessing: bool
    max_abs_diff: float
    float32_rounding: float | None  # measured only when max_abs_diff is over the tolerance
    images_checked: int
    size_bytes: int


class WithPreprocessing(nn.Module):
    """uint8 images in, logits out: the training normalization becomes part of the graph."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images.float() / 255.0 - self.mean) / self.std)


def export_onnx(
    checkpoint: str | Path | dict,
    out: str | Path,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    include_preprocessing: bool = False,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export a checkpoint (file, run folder or loaded dict) to `out`, checked in onnxruntime.

    `out` names the file, or a folder (one that exists, or a path ending in a slash) to write
    `<model name>.onnx` into. A destination that cannot be written raises `OptionError`.
    Raises `ExportError` when PyTorch cannot export the network, or when onnxruntime's logits
    differ from PyTorch's by more than `tolerance` and by more than `ROUNDING_FACTOR` times
    PyTorch's own float32 rounding error on the same images; nothing is written then.
    """
    if opset is not None and opset < MIN_OPSET:
        raise OptionError(
            f"--opset must be at least {MIN_OPSET} (PyTorch's ONNX exporter), got {opset}"
        )
    model, state = model_from_checkpoint(checkpoint)
    module = (
        WithPreprocessing(model, state["mean"], state["std"]) if include_preprocessing else model
    )
    module.eval()
    make_batch = _BatchMaker(state, uint8=include_preprocessing)
    proto = _export(module, make_batch(EXAMPLE_BATCH if dynamic_batch else 1), opset, dynamic_batch)
    _write_metadata(proto, state, include_preprocessing)
    serialized = proto.SerializeToString()
    batches = [
        make_batch(size)
        for size in (CHECK_BATCHES_DYNAMIC if dynamic_batch else CHECK_BATCHES_FIXED)
    ]
    difference = max_difference(module, serialized, batches)
    rounding = None if difference <= tolerance else float32_rounding(module, batches)
    if not (difference <= tolerance or difference <= ROUNDING_FACTOR * rounding):  # NaN fails
        raise ExportError(
            f"onnxruntime differs from PyTorch by {difference:.3g} on {state['model_name']}, over "
            f"the limit of {tolerance:g} and over {ROUNDING_FACTOR}x PyTorch's own float32 "
            f"rounding ({rounding:.3g}); the export was not written"
        )
    path = export_destination(out, state["model_name"])
    try:
        with atomic_write(path) as file:
            file.write(serialized)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OptionError(f"cannot write {path} ({reason}); choose another --out") from None
    return ExportReport(
        path=path,
        model_name=state["model_name"],
        opset=_opset_of(proto),
        dynamic_batch=dynamic_batch,
        include_preprocessing=include_preprocessing,
        max_abs_diff=difference,
        float32_rounding=rounding,
        images_checked=sum(len(batch) for batch in batches),
        size_bytes=len(serialized),
    )


def export_destination(out: str | Path, model_name: str) -> Path:
    """The file `out` names: itself, or `<model_name>.onnx` inside it when it is a folder.

    A folder is one that exists, or a path spelled with a trailing slash (which `Path` drops).
    """
    spelled = os.fspath(out)
    path = Path(spelled)
    if path.is_dir() or spelled.endswith(("/", os.sep)):
        return path / f"{model_name}.onnx"
    return path


class _BatchMaker:
    """Seeded random images as the exported graph takes them: uint8, or normalized float32."""

    def __init__(self, state: dict, uint8: bool) -> None:
        self.shape = tuple(state["image_shape"])
        self.uint8 = uint8
        self.mean = torch.tensor(state["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(state["std"]).view(1, -1, 1, 1)
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, count: int) -> Tensor:
        images = torch.randint(0, 256, (count, *self.shape), generator=self.generator)
        if self.uint8:
            return images.to(torch.uint8)
        return ((images / 255.0 - self.mean) / self.std).float()


def _export(module: nn.Module, example: Tensor, opset: int | None, dynamic_batch: bool):
    """The ONNX ModelProto of `module`; the exporter's progress chatter is kept off the console."""
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    chatter = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                verbose=False,
            )
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs {error.name or 'onnxscript'}; {INSTALL_HINT}"
        ) from None
    except Exception as error:  # the exporter raises many types; each is one export failure
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(f"PyTorch could not export this network to ONNX: {reason}") from None
    return program.model_proto


def _write_metadata(proto, state: dict, include_preprocessing: bool) -> None:
    """What a reader needs to feed the graph and name its outputs, as ONNX metadata_props."""
    entries = {
        "model_name": state["model_name"],
        "cnnlab_version": __version__,
        "input": UINT8_INPUT if include_preprocessing else NORMALIZED_INPUT,
        "image_shape": json.dumps(list(state["image_shape"])),
        "mean": json.dumps(list(state["mean"])),
        "std": json.dumps(list(state["std"])),
        "classes": json.dumps(list(state["classes"])),
    }
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _opset_of(proto) -> int:
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def max_difference(module: nn.Module, serialized: bytes, batches: Sequence[Tensor]) -> float:
    """The largest |onnxruntime - PyTorch| over the logits of `batches`."""
    session = _session(serialized)
    largest = 0.0
    for batch in batches:
        with torch.inference_mode():
            expected = module(batch).float().numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
        largest = max(largest, float(np.abs(actual - expected).max()))
    return largest


def float32_rounding(module: nn.Module, batches: Sequence[Tensor]) -> float:
    """The largest |PyTorch float32 - PyTorch float64| over the logits of `batches`."""
    exact = copy.deepcopy(module).double()
    largest = 0.0
    with torch.inference_mode():
        for batch in batches:
            wide = batch if batch.dtype == torch.uint8 else batch.double()
            error = (module(batch).double() - exact(wide)).abs().max().item()
            largest = max(largest, error)
    return largest


def _session(model: bytes | str, threads: int | None = None):
    """An onnxruntime CPU session for a serialized model or a file.

    `threads` sets onnxruntime's intra-op threads (None: its default, one per physical core).
    """
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"running ONNX models needs onnxruntime; {INSTALL_HINT}") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about graph optimizations
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An exported cnnlab network run by onnxruntime (on the CPU), called like the PyTorch one.

    `takes_uint8` is True when the graph normalizes its input itself (`--include-preprocessing`):
    it is then given uint8 images, otherwise normalized float32 images. `threads`: onnxruntime's
    intra-op threads (None: its default).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        try:
            self.session = _session(str(self.path), threads)
        except ExportError:
            raise
        except Exception as error:  # onnxruntime's own exception types are not importable
            reason = (str(error).strip().splitlines() or ["unreadable"])[0]
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({reason})") from None
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in self.metadata:
            raise CheckpointError(
                f"{self.path}: not exported by cnnlab (no class names in its metadata); "
                "export the checkpoint with `cnnlab export`"
            )
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.takes_uint8 = self.metadata.get("input") == UINT8_INPUT
        # A graph exported with --fixed-batch takes exactly that many images per run.
        batch = graph_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None

    def info(self) -> dict:
        """The metadata as a checkpoint holds it: model_name, classes, mean, std, image_shape."""
        keys = ("classes", "mean", "std", "image_shape")
        return {"model_name": self.metadata.get("model_name", self.path.stem)} | {
            key: json.loads(self.metadata[key]) for key in keys
        }

    def forward(self, images: Tensor) -> Tensor:
        array = images.detach().cpu().numpy()
        step = self.fixed_batch or len(array)
        if len(array) % step:
            raise ExportError(f"{self.path} takes batches of {step} images, got {len(array)}")
        chunks = [
            self.session.run(None, {self.input_name: array[start : start + step]})[0]
            for start in range(0, len(array), step)
        ]
        return torch.from_numpy(np.concatenate(chunks)).to(images.device)


def load_onnx_model(path: str | Path) -> tuple[OnnxModel, dict]:
    """An exported model and its metadata, in the shape `model_from_checkpoint` returns."""
    model = OnnxModel(path)
    return model, model.info()
