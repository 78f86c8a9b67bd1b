"""A training run as a value: the `TrainConfig` dataclass, its YAML form and its hash.

Everything that decides what a run computes lives here, so a run can be written to YAML,
replayed from it, compared and hashed (the studies build on nothing else). Values are checked
and normalized when a config is made: numbers given as strings (`lr: 1e-3` is a string to
YAML 1.1) become numbers, comma-separated lists become lists, augmentation specs take their
canonical form (`crop` -> `crop:4`), and a bad name or value raises a `CnnlabError` naming the
valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.data.augment import parse_augment
from cnnlab.data.memory import DataSplits
from cnnlab.engine.budget import parse_duration
from cnnlab.engine.optim import INITS, OPTIMIZERS, SCHEDULES
from cnnlab.errors import OptionError, UnknownNameError

DEVICES = ("auto", "cpu", "cuda", "mps")
# Fields that say where and how a run is stored, not what it computes: left out of the hash.
_NOT_HASHED = ("out", "download")
# Fields added later, left out of the hash while unset so that older runs keep their hashes.
_HASHED_WHEN_SET = ("test_data",)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    short: str | None = None,
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A `TrainConfig` field with its help text: the one declaration the CLI and docs follow.

    `short` is the one-letter flag (`-e`); `factory` makes a mutable default; `cli=False`
    keeps the field off the command line (the CLI sets it some other way).
    """
    metadata = {"help": help, "short": short, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run; defaults train `lenet5_modern` on `mnist-5k`.

    Each field carries its help text (`option(...)`); `cnnlab train`'s flags are generated
    from these fields, so a new field is a new flag with no other change.
    """

    model: str = option("lenet5_modern", help="Model name (see `cnnlab models`).", short="-m")
    data: str = option(
        "mnist-5k",
        help="Dataset: mnist-5k, mnist, fashion-mnist, cifar10, cifar100 (optionally NAME:ROOT), "
        "folder:PATH or dogs-vs-cats:PATH.",
        short="-d",
    )
    model_options: dict[str, Any] = option(
        help="Model options such as activation or pooling (CLI: --model-opt key=value).",
        factory=dict,
        cli=False,
    )
    epochs: int = option(
        4, help="Epochs to train (fitted to the time budget when one is set).", short="-e"
    )
    time_budget: str | None = option(
        None, help="Wall-clock budget, e.g. 10m; fits the epochs and schedule to it, stops on time."
    )
    batch_size: int = option(
        128,
        help="Global batch: with N data-parallel processes each takes batch_size / N images.",
        short="-b",
    )
    lr: float = option(0.1, help="Peak learning rate.")
    optimizer: str = option("momentum", help="sgd, momentum, adam, adamw or adagrad.")
    momentum: float = option(0.9, help="Momentum of the `momentum` optimizer, in [0, 1).")
    nesterov: bool = option(False, help="Nesterov momentum (optimizer `momentum` only).")
    weight_decay: float = option(
        5e-4, help="L2 penalty on conv/linear weights (not on biases or normalization layers)."
    )
    schedule: str = option(
        "onecycle", help="constant, step, cosine or onecycle (stepped every batch)."
    )
    warmup_epochs: float = option(0.0, help="Epochs of linear warm-up (fewer than epochs).")
    lr_step_size: int = option(
        0, help="Epochs between decays of the step schedule (0: a third of the run)."
    )
    lr_gamma: float = option(0.1, help="Decay factor of the step schedule, in (0, 1].")
    init: str = option(
        "default",
        help="default (the model's own), xavier, xavier_weights (Xavier weights, PyTorch's "
        "default biases), kaiming or pytorch; drawn from the seed alone.",
    )
    augment: list[str] = option(
        help="Batch augmentation, e.g. flip,crop:4 (also translate:N, cutout:N, jitter:S).",
        factory=list,
    )
    multi_scale: list[int] = option(
        help="Train each batch at a side drawn from these sizes, e.g. 24,28,32.", factory=list
    )
    label_smoothing: float = option(0.0, help="Label smoothing of the loss, in [0, 1).")
    seed: int = option(0, help="Seed of initialization, shuffling, augmentation and splits.")
    device: str = option("auto", help="auto, cpu, cuda or mps.")
    amp: bool = option(
        False, help="Mixed precision: bf16 autocast (fp16 with loss scaling on GPUs without bf16)."
    )
    channels_last: bool = option(False, help="Channels-last memory format.")
    test_time_flip: bool = option(
        False, help="Score the test split on each image and its mirror image (mean of the logits)."
    )
    compile: bool = option(False, help="torch.compile the model (the first steps compile it).")
    image_size: int | None = option(None, help="Resize the images once, at load time.")
    channels: int | None = option(None, help="Convert the images to 1 (grayscale) or 3 (RGB).")
    mean: list[float] | None = option(
        None,
        help="Normalization mean of pixels in [0, 1], one per channel or one for all "
        "(default: the training split's own).",
    )
    std: list[float] | None = option(
        None, help="Normalization std, like --mean; --mean 0 --std 1 feeds raw [0, 1] pixels."
    )
    val_fraction: float = option(
        0.2,
        help="Share of the training images held out as the test split of data that has none "
        "(and no --test-data). 0 holds nothing out and keeps the last epoch as best.pt.",
    )
    test_data: str | None = option(
        None,
        help="A dataset to test on (its test split, else all of it), e.g. folder:PATH; "
        "every training image of --data then trains.",
    )
    download: bool = option(False, help="Download a named dataset that is not on disk.")
    out: str | None = option(
        None, help="Run folder (default runs/<model>-<data>-<hash>).", short="-o"
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            setattr(self, item.name, _coerce(item.name, getattr(self, item.name), hints[item.name]))
        self._validate()

    def _validate(self) -> None:
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("init", self.init, INITS),
            ("device", self.device, DEVICES),
        ):
            if value not in choices:
                raise UnknownNameError(name, value, choices)
        for name, low in (("epochs", 1), ("batch_size", 1), ("lr_step_size", 0)):
            if getattr(self, name) < low:
                raise OptionError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if self.lr <= 0:
            raise OptionError(f"lr must be positive, got {self.lr}")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.momentum >= 1:
            raise OptionError(f"momentum must be below 1 (e.g. 0.9), got {self.momentum}")
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise OptionError(
                f"warmup_epochs ({self.warmup_epochs:g}) must be fewer than epochs ({self.epochs})"
            )
        if "num_classes" in self.model_options:
            raise OptionError(
                "model option num_classes is set from the data (its number of classes); "
                "drop it from the model options"
            )
        if not 0 <= self.val_fraction < 1:
            raise OptionError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise OptionError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.lr_gamma <= 1:
            raise OptionError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if any(size < 1 for size in self.multi_scale):
            raise OptionError(f"multi_scale sizes must be positive, got {self.multi_scale}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and (not values or not all(map(math.isfinite, values))):
                raise OptionError(f"{name} needs finite numbers, one per channel, got {values}")
        if self.std is not None and min(self.std) <= 0:
            raise OptionError(f"std values must be positive, got {self.std}")
        self.augment = parse_augment(self.augment).specs

    def normalization(self, data: DataSplits) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The per-channel mean and std for `data`: the configured ones, else the data's own."""
        channels = data.image_shape[0]
        mean = _per_channel("mean", self.mean, data.mean, channels)
        std = _per_channel("std", self.std, data.std, channels)
        return mean, std

    @property
    def run_dir(self) -> Path:
        """The folder the run writes to: `out`, or `runs/<model>-<data>-<hash>`."""
        if self.out:
            return Path(self.out)
        data = re.sub(r"[^A-Za-z0-9._-]+", "_", self.data).strip("_")[:40]
        return Path("runs") / f"{self.model}-{data}-{self.hash()[:8]}"

    def hash(self) -> str:
        """A stable hex digest of everything that decides the result (not `out`/`download`)."""
        values = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _NOT_HASHED and not (k in _HASHED_WHEN_SET and v is None)
        }
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (checked like any new config)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (safe in a `weights_only` checkpoint and in JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping; an unknown key is an error listing the valid ones."""
        valid = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise OptionError(
                f"unknown config key {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}"
            )
        return cls(**values)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text, also written to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a config written by `to_yaml` (or by hand; missing keys keep their defaults)."""
        values = read_yaml(path, "config file")
        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise OptionError(f"config file {path} must hold a mapping of keys to values")
        return cls.from_dict(values)


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML document in `path`; a missing file or bad YAML is an `OptionError` naming `what`."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise OptionError(f"{what} {path} is not valid YAML{where}") from None


def _per_channel(
    name: str, given: list[float] | None, measured: tuple[float, ...], channels: int
) -> tuple[float, ...]:
    """`given` spread over `channels` (one value serves all), or `measured` when None."""
    if given is None:
        return tuple(measured)
    if len(given) not in (1, channels):
        raise OptionError(
            f"{name} has {len(given)} values but the images have {channels} channels; "
            "give one value per channel or a single value for all"
        )
    return tuple(given) * (channels // len(given))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """`value` converted to the field type `hint`, or an `OptionError` naming the field."""
    if isinstance(hint, types.UnionType):  # `int | None` and the like
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    try:
        if origin is list:
            (item_type,) = typing.get_args(hint)
            if isinstance(value, str):
                items = value.split(",")
            else:  # a lone number (`mean: 0` in YAML) is a list of one
                items = list(value) if isinstance(value, list | tuple) else [value]
            return [_scalar(item_type, item) for item in items if str(item).strip()]
        if origin is dict or hint is dict:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise TypeError
            return dict(value)
        return _scalar(hint, value)
    except (TypeError, ValueError, OverflowError):
        expected = _EXPECTED.get(origin or hint, str(hint))
        raise OptionError(f"{name} must be {expected}, got {value!r}") from None


_EXPECTED = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list (or a comma-separated string)",
    dict: "a mapping of option names to values",
}


def _scalar(kind: type, value: Any) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(value, bool) and kind is not str:
        raise TypeError  # True is an int to Python, but `epochs: true` is a mistake
    if kind is int:
        if isinstance(value, str):
            value = float(value) if any(c in value for c in ".eE") else int(value)
        if not isinstance(value, int | float) or value != int(value):
            raise TypeError
        return int(value)
    if kind is float:
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value.strip()
    raise TypeError(f"unsupported config field type {kind}")
