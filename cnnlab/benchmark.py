"""Throughput benchmarks: training and inference images/s, peak memory and achieved FLOP/s.

For each model and batch size, one training step (forward, cross-entropy, backward, SGD with
momentum) and one inference pass are timed with device-synchronized clocks: a few warm-up
steps, then the median of `repeats` timed rounds of equal step counts. Every architecture that
torchvision also has is timed beside torchvision's own model in the same run, round by round
and in alternating order, so that both sides see the same machine load; the ratio is
cnnlab's images/s over torchvision's (above 1: cnnlab is faster).

Achieved FLOP/s counts the forward pass with `torch.utils.flop_counter.FlopCounterMode` (as
`cnnlab summary` does) and a training step as three forward passes (the backward pass costs
about two). It is shown beside the device's measured peak: the median rate of a large square
matrix multiply. Peak memory is CUDA's `max_memory_allocated` for one step; on the CPU it is
not measured ("n/a"). A batch that does not fit in memory is reported with its size, and the
benchmark goes on with the next one.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnlab.engine.distributed import resolve_device
from cnnlab.errors import OptionError
from cnnlab.models import create_model_for_input, model_info
from cnnlab.models.layers import AuxOutputs
from cnnlab.summary import summarize

# Seconds a timed round should last at least, so that the clock's resolution does not matter.
ROUND_SECONDS = 0.2
MAX_STEPS_PER_ROUND = 50
WARMUP_STEPS = 2
NUM_CLASSES = 1000


@dataclass(frozen=True)
class BenchSettings:
    """How the models run: device, batch-level options, and how long to time them."""

    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    repeats: int = 5


@dataclass
class BenchResult:
    """One model at one batch size, from cnnlab's zoo (`source="cnnlab"`) or torchvision's.

    Rates are images per second (median over the rounds); `flops_per_image` is the forward
    pass; `peak_memory_bytes` is None where not measured; `error` says why a row has no rates
    (e.g. the batch did not fit in memory).
    """

    model: str
    source: str
    batch_size: int
    input_size: tuple[int, int, int]
    device: str
    train_images_per_sec: float | None = None
    infer_images_per_sec: float | None = None
    flops_per_image: int = 0
    peak_memory_bytes: int | None = None
    error: str | None = None

    @property
    def train_flops_per_sec(self) -> float | None:
        rate = self.train_images_per_sec
        return None if rate is None else 3 * self.flops_per_image * rate

    @property
    def infer_flops_per_sec(self) -> float | None:
        rate = self.infer_images_per_sec
        return None if rate is None else self.flops_per_image * rate

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "input_size": list(self.input_size),
            "train_flops_per_sec": self.train_flops_per_sec,
            "infer_flops_per_sec": self.infer_flops_per_sec,
        }


def torchvision_counterpart(name: str) -> Callable[..., nn.Module] | None:
    """torchvision's builder of the same architecture under the same name, if it has one."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    builder = torchvision.models.get_model_builder(name)

    def build(**options: object) -> nn.Module:
        with warnings.catch_warnings():  # GoogLeNet/Inception's notice about their default init
            warnings.simplefilter("ignore", FutureWarning)
            return builder(**options)

    return build


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """The device's measured matrix-multiply rate (FLOP/s): median of timed square matmuls."""
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(5):
        started = _clock(device)
        torch.mm(a, b)
        times.append(_clock(device) - started)
    return 2 * size**3 / statistics.median(times[1:])


def run_benchmark(
    models: Sequence[str],
    batch_sizes: Sequence[int],
    settings: BenchSettings,
    input_size: tuple[int, int, int] | None = None,
) -> list[BenchResult]:
    """Benchmark each model at each batch size; torchvision's twin (if any) in the same rounds.

    `input_size` (C, H, W) defaults to each model's own. Unknown models and absent devices
    raise before anything runs.
    """
    device = resolve_device(settings.device)
    for name in models:
        model_info(name)  # an unknown name fails here, with the list of valid ones
    if not batch_sizes or min(batch_sizes) < 1:
        raise OptionError(f"batch sizes must be positive, got {list(batch_sizes)}")
    if settings.repeats < 1:
        raise OptionError(f"repeats must be at least 1, got {settings.repeats}")
    results = []
    for name in models:
        shape = input_size or model_info(name).input_size
        flops = summarize(name, shape, num_classes=NUM_CLASSES).flops
        for batch_size in batch_sizes:
            results += _bench_pair(name, shape, batch_size, flops, device, settings)
    return results


def _bench_pair(
    name: str,
    shape: tuple[int, int, int],
    batch_size: int,
    flops: int,
    device: torch.device,
    settings: BenchSettings,
) -> list[BenchResult]:
    """cnnlab's model and torchvision's (if any), timed in alternating rounds."""
    builders: dict[str, Callable[[], nn.Module]] = {
        "cnnlab": lambda: create_model_for_input(name, shape, NUM_CLASSES)
    }
    twin = torchvision_counterpart(name)
    if twin is not None and shape[0] == 3:
        builders["torchvision"] = lambda: twin(weights=None, num_classes=NUM_CLASSES)
    rows = {
        source: BenchResult(name, source, batch_size, shape, str(device), flops_per_image=flops)
        for source in builders
    }
    runners: dict[str, _Runner] = {}
    try:
        for source, build in builders.items():
            runners[source] = _Runner(build(), shape, batch_size, device, settings)
        for mode in ("train", "infer"):
            rates = _interleaved_rates(runners, mode, batch_size, settings.repeats)
            for source, rate in rates.items():
                setattr(rows[source], f"{mode}_images_per_sec", rate)
        if device.type == "cuda":
            for source, runner in runners.items():
                rows[source].peak_memory_bytes = runner.peak_memory()
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        for row in rows.values():
            row.train_images_per_sec = row.infer_images_per_sec = None
            row.error = f"out of memory at batch {batch_size}"
    finally:
        runners.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return list(rows.values())


class _Runner:
    """One model on the device with its optimizer and a fixed random batch."""

    def __init__(
        self,
        model: nn.Module,
        shape: tuple[int, int, int],
        batch_size: int,
        device: torch.device,
        settings: BenchSettings,
    ) -> None:
        torch.manual_seed(0)
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.device = device
        self.model = model.to(device, memory_format=memory_format)
        self.forward = torch.compile(self.model) if settings.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.images = torch.randn(batch_size, *shape, device=device).to(memory_format=memory_format)
        self.labels = torch.randint(NUM_CLASSES, (batch_size,), device=device)
        self.amp = settings.amp

    def step(self, mode: str) -> None:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        if mode == "infer":
            self.model.eval()
            with torch.inference_mode(), autocast:
                self.forward(self.images)
            return
        self.model.train()
        with autocast:
            loss = _loss(self.forward(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def peak_memory(self) -> int:
        """CUDA bytes allocated at the peak of one training step."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step("train")
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)


def _loss(outputs: object, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits plus the auxiliary heads' (both zoos' GoogLeNet/Inception)."""
    if isinstance(outputs, AuxOutputs):
        logits, aux = outputs.logits, list(outputs.aux_logits)
    elif isinstance(outputs, tuple):  # torchvision's GoogLeNetOutputs / InceptionOutputs
        logits, aux = outputs[0], [out for out in outputs[1:] if out is not None]
    else:
        logits, aux = outputs, []
    return F.cross_entropy(logits, labels) + sum(F.cross_entropy(a, labels) for a in aux)


def _interleaved_rates(
    runners: dict[str, _Runner], mode: str, batch_size: int, repeats: int
) -> dict[str, float]:
    """Median images/s of each runner over `repeats` rounds, the order alternating per round."""
    first = next(iter(runners.values()))
    for runner in runners.values():
        for _ in range(WARMUP_STEPS):
            runner.step(mode)
    probe = _timed(first, mode, 1)
    steps = max(1, min(MAX_STEPS_PER_ROUND, round(ROUND_SECONDS / max(probe, 1e-6))))
    seconds: dict[str, list[float]] = {source: [] for source in runners}
    order = list(runners)
    for _ in range(repeats):
        for source in order:
            seconds[source].append(_timed(runners[source], mode, steps))
        order.reverse()
    return {
        source: steps * batch_size / statistics.median(times) for source, times in seconds.items()
    }


def _timed(runner: _Runner, mode: str, steps: int) -> float:
    started = _clock(runner.device)
    for _ in range(steps):
        runner.step(mode)
    return _clock(runner.device) - started


def _clock(device: torch.device) -> float:
    """The wall clock after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )
