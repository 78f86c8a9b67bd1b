"""A study as a value: `StudySpec` (YAML in, validated up front) and its points × seeds.

A spec holds a `base` training config (any `TrainConfig` field, `model_options` included),
`factors` (name -> list of values; a name is a `TrainConfig` field or an option of the base
model such as `activation`, `pooling`, `kernel_size`, `pool_size`), a `mode`
(`one-at-a-time`: each factor varied alone around the base, plus the base itself; `grid`: every
combination), `seeds` (a count or a list) and optionally `train_images` (train on the first N
images of the training split, like the reference scripts' `--train-count`) and `validation` (a
fraction of each class of the training split held out, seed 0, and scored instead of the test
split; `cnnlab study best` then reports the test split on fresh seeds, from final points) and
`reference` (a CSV of published rows, its path relative to the spec: `studies.reference`) and
`points` (extra points beyond the factors' expansion, each a mapping of factors to values, such
as a published tuned combination; every name and value is checked as a factor's is).

Every point's config is built and its model constructed on the meta device before anything
runs, so a bad value fails at once, in one line naming the factor.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.engine.config import TrainConfig, read_yaml
from cnnlab.errors import CnnlabError, OptionError
from cnnlab.models.registry import count_parameters, model_info
from cnnlab.studies.reference import check_reference, read_reference

MODES = ("one-at-a-time", "grid")
SPEC_KEYS = (
    "base", "factors", "mode", "seeds", "train_images", "validation", "reference", "points"
)  # fmt: skip
# Config fields that are not factors: the seeds have their own key; the rest say where and how.
NOT_FACTORS = ("seed", "out", "download", "model_options", "device")
BASE_POINT = "base"
FINAL_PREFIX = "final:"  # the points `study best` trains on the full training split, tested


@dataclass(frozen=True, eq=False)
class Point:
    """One configuration of the study: `changes` from the base (factor -> value).

    A `final` point is trained by `study best` on the full training split and scored on the
    test split, apart from the study's own (validation) runs of the same changes.
    """

    changes: tuple[tuple[str, Any], ...]
    final: bool = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and self.name == other.name

    def __hash__(self) -> int:  # values may be lists (`mean`, `augment`)
        return hash(self.name)

    @property
    def name(self) -> str:
        """`base`, or `factor=value[,factor=value...]`; prefixed `final:` when final."""
        name = ",".join(f"{factor}={_text(value)}" for factor, value in self.changes)
        return final_name(name or BASE_POINT) if self.final else name or BASE_POINT

    @property
    def folder(self) -> str:
        """The point's name made safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9._=,-]+", "_", self.name)


@dataclass(frozen=True)
class Run:
    """One training run of the study: a point and a seed."""

    point: Point
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.point.folder}-s{self.seed}"


@dataclass
class StudySpec:
    """A validated study: base config, factors, mode, seeds, optional training-set size,
    validation fraction, extra points and published rows (`reference`: the CSV's rows, or their
    values as checked, which `to_dict` keeps)."""

    base: TrainConfig
    factors: dict[str, list[Any]]
    mode: str = "one-at-a-time"
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    train_images: int | None = None
    validation: float | None = None
    reference: list[dict[str, Any]] | None = None
    extra_points: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = self.base.replace(out=None)
        if self.mode not in MODES:
            raise OptionError(f"study mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.seeds = _seed_list(self.seeds)
        if self.train_images is not None and (
            isinstance(self.train_images, bool)
            or not isinstance(self.train_images, int)
            or self.train_images < 1
        ):
            raise OptionError(f"train_images must be a positive integer, got {self.train_images!r}")
        if self.validation is not None and (
            isinstance(self.validation, bool)
            or not isinstance(self.validation, int | float)
            or not 0 < self.validation < 1
        ):
            raise OptionError(
                f"validation must be a fraction strictly between 0 and 1, got {self.validation!r}"
            )
        if not isinstance(self.factors, dict) or not self.factors:
            raise OptionError("the study needs `factors`: a mapping of names to lists of values")
        valid = factor_names(self.base)
        for name, values in self.factors.items():
            if name not in valid:
                raise OptionError(f"unknown factor {_closest(name, valid)}")
            if not isinstance(values, list) or not values:
                raise OptionError(f"factor '{name}' needs a non-empty list of values")
            self.factors[name] = [self._normalized(name, value) for value in values]
        self.extra_points = [self._extra_point(changes, valid) for changes in self.extra_points]
        for point in self.points():
            self.config_for(point, self.seeds[0])  # every value checked before any run starts
        if self.reference is not None:
            self.reference = check_reference(
                self.reference, self.factors, self.base_values(), self._normalized
            )

    # ----------------------------------------------------------------------------- expansion

    def points(self) -> list[Point]:
        """The study's points: the base first, then each factor's values (or the grid)."""
        if self.mode == "grid":
            names = list(self.factors)
            combos = itertools.product(*(self.factors[name] for name in names))
            candidates = [self.point(dict(zip(names, combo, strict=True))) for combo in combos]
        else:
            candidates = [self.point({})]
            for name, values in self.factors.items():
                candidates += [self.point({name: value}) for value in values]
        candidates += [self.point(changes) for changes in self.extra_points]
        return list(dict.fromkeys(candidates))

    def runs(self) -> list[Run]:
        """Every (point, seed) pair, point by point."""
        return [Run(point, seed) for point in self.points() for seed in self.seeds]

    def point(self, changes: dict[str, Any]) -> Point:
        """The point for `changes`, leaving out values equal to the base's."""
        base = self.base_values()
        kept = tuple((k, v) for k, v in changes.items() if _canonical(v) != _canonical(base[k]))
        return Point(kept)

    def _normalized(self, name: str, value: Any) -> Any:
        """`value` as the config holds it (`"1e-3"` -> 0.001), checked on its own."""
        config = self.config_for(Point(((name, value),)), self.seeds[0])
        return getattr(config, name) if name in _config_fields() else config.model_options[name]

    def _extra_point(self, changes: Any, valid: list[str]) -> dict[str, Any]:
        """An entry of `points`, its names checked and its values normalized."""
        if not isinstance(changes, dict) or not changes:
            raise OptionError(
                f"each of `points` is a mapping of factors to values, got {changes!r}"
            )
        for name in changes:
            if name not in valid:
                raise OptionError(f"points: unknown factor {_closest(name, valid)}")
        return {name: self._normalized(name, value) for name, value in changes.items()}

    def base_values(self) -> dict[str, Any]:
        """Each factor's value in the base config (model options resolved to their defaults)."""
        return base_values(self.to_dict())

    def config_for(self, point: Point, seed: int, out: Path | None = None) -> TrainConfig:
        """The run's `TrainConfig`; a bad value raises one line naming its factor."""
        fields = dict(point.changes)
        options = {k: fields.pop(k) for k in list(fields) if k not in _config_fields()}
        try:
            config = self.base.replace(
                **fields,
                model_options={**self.base.model_options, **options},
                seed=seed,
                out=None if out is None else str(out),
            )
            _check_model_options(config)
        except CnnlabError as error:
            raise OptionError(f"factor value {point.name}: {error}") from None
        return config

    # ----------------------------------------------------------------------------- identity

    def to_dict(self) -> dict[str, Any]:
        """Plain values: what the store keeps and what the spec hash covers.

        `validation`, `reference` and `points` appear only when set, so a study without them
        keeps its hash.
        """
        values = {
            "base": {k: v for k, v in self.base.to_dict().items() if k != "out"},
            "factors": {k: list(v) for k, v in self.factors.items()},
            "mode": self.mode,
            "seeds": list(self.seeds),
            "train_images": self.train_images,
        }
        optional = {
            "validation": self.validation,
            "reference": self.reference,
            "points": [dict(point) for point in self.extra_points] or None,
        }
        return values | {key: value for key, value in optional.items() if value is not None}

    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: Any, folder: Path | None = None) -> StudySpec:
        """A spec from plain values; a `reference` path is relative to `folder` (the spec's)."""
        if not isinstance(values, dict):
            raise OptionError("a study spec must be a mapping with `base`, `factors` and `seeds`")
        unknown = sorted(set(values) - set(SPEC_KEYS))
        if unknown:
            raise OptionError(
                f"unknown study key {', '.join(map(repr, unknown))}; valid keys: {', '.join(SPEC_KEYS)}"
            )
        base = values.get("base") or {}
        if not isinstance(base, dict):
            raise OptionError("the study's `base` must be a mapping of training options")
        try:
            config = TrainConfig.from_dict(base)
        except CnnlabError as error:
            raise OptionError(f"base: {error}") from None
        return cls(
            base=config,
            factors=values.get("factors"),
            mode=values.get("mode", "one-at-a-time"),
            seeds=values.get("seeds", 1),
            train_images=values.get("train_images"),
            validation=values.get("validation"),
            reference=_reference_rows(values.get("reference"), folder or Path.cwd()),
            extra_points=values.get("points") or [],
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudySpec:
        return cls.from_dict(read_yaml(path, "study spec"), Path(path).parent)


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], bool]:
    """What changed between two `StudySpec.to_dict()`s, and whether it only adds runs."""
    changes, additive = [], True
    if old.get("reference") != new.get("reference"):  # published rows: nothing to rerun
        changes.append("reference rows changed")
    for key in ("base", "mode", "train_images", "validation"):
        if key == "base":
            for field in sorted(set(old["base"]) | set(new["base"])):
                before, after = old["base"].get(field), new["base"].get(field)
                if before != after:
                    changes.append(f"base.{field} {before!r} -> {after!r}")
                    additive = False
        elif old.get(key) != new.get(key):
            changes.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
            additive = False
    for name in sorted(set(old["factors"]) | set(new["factors"])):
        before, after = old["factors"].get(name, []), new["factors"].get(name, [])
        added = [v for v in after if v not in before]
        removed = [v for v in before if v not in after]
        if added:
            changes.append(f"factor {name} adds {added}")
        if removed:
            changes.append(f"factor {name} drops {removed}")
            additive = False
    before, after = old.get("points", []), new.get("points", [])
    if before != after:
        changes.append(f"points {before} -> {after}")
        additive = additive and all(p in after for p in before)
    if old["seeds"] != new["seeds"]:
        changes.append(f"seeds {old['seeds']} -> {new['seeds']}")
        additive = additive and set(old["seeds"]) <= set(new["seeds"])
    return changes, additive


def final_name(point: str) -> str:
    """The name of `point`'s final runs (`final:lr=0.05`)."""
    return FINAL_PREFIX + point


def holdout_for(point: str, validation: float | None) -> float | None:
    """The fraction of the training split a run of `point` holds out: none for final points."""
    return None if point.startswith(FINAL_PREFIX) else validation


def fresh_seeds(seeds: list[int]) -> list[int]:
    """As many seeds as `seeds`, each past the largest (`[0, 1]` -> `[2, 3]`)."""
    start = max(seeds) + 1
    return list(range(start, start + len(seeds)))


def base_values(spec: dict[str, Any]) -> dict[str, Any]:
    """Each factor's value in a spec's base (`StudySpec.to_dict()`), model options resolved."""
    base = spec["base"]
    options = model_info(base["model"]).defaults | base["model_options"]
    names = [*spec["factors"], *(name for point in spec.get("points", []) for name in point)]
    return {name: base[name] if name in base else options[name] for name in names}


def factor_names(base: TrainConfig) -> list[str]:
    """Valid factor names: the config fields that decide a run, then the model's options."""
    fields = [name for name in _config_fields() if name not in NOT_FACTORS]
    options = [name for name in model_info(base.model).defaults if name not in fields]
    return fields + options


def _closest(name: str, valid: list[str]) -> str:
    """`'name'`, the closest valid name as a suggestion when there is one, and the valid names."""
    closest = difflib.get_close_matches(name, valid, n=1)
    suggestion = f"; did you mean '{closest[0]}'?" if closest else ";"
    return f"'{name}'{suggestion} valid factors: {', '.join(valid)}"


def _config_fields() -> list[str]:
    return [item.name for item in dataclasses.fields(TrainConfig)]


def _check_model_options(config: TrainConfig) -> None:
    """The model builds with these options (the registry checks each value), on the meta device."""
    sized = dict(config.model_options)
    if model_info(config.model).takes_image_size and config.image_size:
        sized.setdefault("image_size", config.image_size)
    count_parameters(config.model, **sized)


def _reference_rows(reference: Any, folder: Path) -> list[dict[str, Any]] | None:
    """`reference`: a CSV path (relative to `folder`), or the rows a store kept."""
    if reference is None or isinstance(reference, list):
        return reference
    if not isinstance(reference, str):
        raise OptionError(f"reference must be the path of a CSV file, got {reference!r}")
    return read_reference(folder / reference)


def _seed_list(seeds: Any) -> list[int]:
    """A seed count (`seeds: 5` -> 0..4) or an explicit list, validated."""
    if isinstance(seeds, bool):
        raise OptionError(f"seeds must be a count or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise OptionError(f"seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise OptionError(
            f"seeds must be a count (>= 1) or a non-empty list of integers, got {seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise OptionError(f"seeds repeat a value: {seeds}")
    return list(seeds)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
