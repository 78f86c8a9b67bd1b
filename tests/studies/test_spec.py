"""Study specs: expansion into points x seeds, and one clear line for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import tiny_spec

from cnnlab.engine.config import read_yaml
from cnnlab.errors import OptionError
from cnnlab.studies.spec import StudySpec, spec_differences

EXAMPLES = Path(__file__).parents[2] / "examples"


def _spec(**changes) -> StudySpec:
    return StudySpec.from_dict(tiny_spec(**changes))


def test_one_at_a_time_varies_each_factor_alone_around_the_base() -> None:
    spec = _spec(factors={"lr": [0.05, 0.1, "2e-1"], "pool_size": [1, 2]}, seeds=[3, 7])
    names = [point.name for point in spec.points()]
    # 0.1 and pool_size 2 are the base's own values: they are the base point, run once.
    assert names == ["base", "lr=0.05", "lr=0.2", "pool_size=1"]
    assert [run.folder for run in spec.runs()][:3] == ["base-s3", "base-s7", "lr=0.05-s3"]
    config = spec.config_for(spec.points()[3], 7)
    assert config.model_options["pool_size"] == 1 and config.seed == 7
    assert config.model_options["kernel_size"] == 3  # the base's options are kept


def test_grid_crosses_every_value() -> None:
    spec = _spec(mode="grid", factors={"lr": [0.05, 0.2], "pooling": ["avg", "max"]}, seeds=1)
    assert len(spec.points()) == 4 and len(spec.runs()) == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"factors": {"learning_rate": [0.1]}},
            "unknown factor 'learning_rate'; valid factors: model, data",
        ),
        ({"factors": {"lr": ["fast"]}}, "lr must be a number, got 'fast'"),
        ({"factors": {"lr": []}}, "factor 'lr' needs a non-empty list"),
        ({"factors": {"activation": ["swish"]}}, "unknown activation 'swish'"),
        (
            {"factors": {"kernel_size": ["3"]}},
            "kernel_size='3' is not valid; kernel_size is a whole number",
        ),
        (
            {"factors": {"kernel_size": [0]}},
            "kernel_size=0 is not valid; kernel_size is a whole number >= 1",
        ),
        ({"seeds": 0}, "seeds must be at least 1"),
        ({"seeds": [1, 1]}, "seeds repeat a value"),
        ({"mode": "random"}, "study mode must be one of"),
        ({"factors": {}}, "the study needs `factors`"),
        ({"base": {"epochs": "many"}}, "base: epochs must be an integer"),
        ({"trials": 3}, "unknown study key 'trials'"),
        ({"validation": 1.5}, "validation must be a fraction strictly between 0 and 1, got 1.5"),
        ({"validation": 0}, "validation must be a fraction strictly between 0 and 1, got 0"),
        ({"validation": "20%"}, "validation must be a fraction strictly between 0 and 1"),
        ({"validation": True}, "validation must be a fraction strictly between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_line(changes: dict, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        _spec(**changes)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_unknown_factor_lists_model_options_too() -> None:
    with pytest.raises(OptionError, match="activation, pooling, kernel_size, pool_size"):
        _spec(factors={"act": ["relu"]})


def test_differences_say_what_changed_and_whether_it_only_adds() -> None:
    old = _spec().to_dict()
    added = _spec(factors={"lr": [0.05, 0.2, 0.4]}, seeds=3).to_dict()
    changes, additive = spec_differences(old, added)
    assert additive and changes == ["factor lr adds [0.4]", "seeds [0, 1] -> [0, 1, 2]"]
    base = tiny_spec()
    base["base"]["epochs"] = 3
    changes, additive = spec_differences(old, StudySpec.from_dict(base).to_dict())
    assert not additive and changes == ["base.epochs 2 -> 3"]


def test_validation_is_a_change_of_spec_not_an_addition() -> None:
    without, with_it = _spec().to_dict(), _spec(validation=0.2).to_dict()
    assert "validation" not in without  # the hash of a study without it stays as it was
    for old, new, change in ((without, with_it, "None -> 0.2"), (with_it, without, "0.2 -> None")):
        changes, additive = spec_differences(old, new)
        assert not additive and changes == [f"validation {change}"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*_study.yaml")), ids=lambda path: path.name)
def test_example_study_specs_validate_every_point(path: Path) -> None:
    values = read_yaml(path, "study spec")
    # Published rows are written from ../shared by a script (test_reference.py checks them).
    values.pop("reference", None)
    spec = StudySpec.from_dict(values)
    assert len(spec.runs()) == len(spec.points()) * len(spec.seeds) > 1
