"""The classic LeNet-5 study example: its expansion, its extra point, and that a point runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from study_helpers import DATA, tiny_spec

from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.config import read_yaml
from cnnlab.errors import OptionError
from cnnlab.studies import StudySpec, run_study
from cnnlab.studies.spec import spec_differences

CLASSIC = Path(__file__).parents[2] / "examples" / "lenet5_classic_study.yaml"
TUNED = "lr=1.3,batch_size=16,epochs=50,conv_activation=relu"


def classic_values() -> dict:
    """The classic spec's values without its `reference` (a file written from ../shared, which
    tests/studies/test_reference.py checks)."""
    values = read_yaml(CLASSIC, "study spec")
    values.pop("reference")
    return values


def test_classic_study_expands_to_every_published_value_and_the_tuned_point() -> None:
    spec = StudySpec.from_dict(classic_values())
    names = [point.name for point in spec.points()]
    # base + 8 other learning rates + 9 other batch sizes + 2 other epoch counts + conv ReLU
    # + max pooling + C1 kernels 3 and 4 + pool size 1 + the tuned combination
    assert len(names) == 1 + 8 + 9 + 2 + 1 + 1 + 2 + 1 + 1 == 26
    assert len(spec.runs()) == 26 * 5
    assert names[-1] == TUNED  # kernel 5 and pool size 2 are the base's: left out of its name
    tuned = spec.config_for(spec.points()[-1], seed=0)
    assert (tuned.lr, tuned.batch_size, tuned.epochs) == (1.3, 16, 50)
    assert tuned.model_options["conv_activation"] == "relu"
    assert tuned.model_options["activation"] == "sigmoid"
    base = spec.base
    assert (base.optimizer, base.lr, base.batch_size, base.epochs) == ("sgd", 0.9, 256, 10)
    assert (base.init, list(base.mean), list(base.std)) == ("xavier_weights", [0.0], [1.0])


def test_the_tuned_point_runs(tmp_path: Path) -> None:
    values = classic_values()
    values["base"].update(data="quadrants", epochs=1, device="cpu")
    values["points"][0]["epochs"] = 1
    values.update(factors={"pooling": ["avg"]}, seeds=1)  # the base value: no factor point
    spec = StudySpec.from_dict(values)
    outcome = run_study(spec, tmp_path, data=DATA, threads=1, log=None)
    assert outcome.counts["done"] == 2
    run = tmp_path / "runs" / "lr=1.3,batch_size=16,conv_activation=relu-s0"  # epochs as the base
    model, _ = model_from_checkpoint(run / "last.pt")
    assert isinstance(model.features.c1_act, torch.nn.ReLU)
    assert isinstance(model.classifier.f6_act, torch.nn.Sigmoid)


def test_extra_points_are_checked_like_factors() -> None:
    with pytest.raises(OptionError, match="points: unknown factor 'learning_rate'"):
        StudySpec.from_dict(tiny_spec(points=[{"learning_rate": 0.1}]))
    with pytest.raises(OptionError, match="each of `points` is a mapping"):
        StudySpec.from_dict(tiny_spec(points=[0.1]))
    with pytest.raises(OptionError, match="factor value lr=-1"):
        StudySpec.from_dict(tiny_spec(points=[{"lr": -1, "batch_size": 16}]))


def test_adding_an_extra_point_extends_the_study() -> None:
    old = StudySpec.from_dict(tiny_spec())
    new = StudySpec.from_dict(tiny_spec(points=[{"lr": 0.3, "batch_size": 16}]))
    assert "points" not in old.to_dict()  # a study without points keeps its hash
    changes, additive = spec_differences(old.to_dict(), new.to_dict())
    assert additive and changes == ["points [] -> [{'lr': 0.3, 'batch_size': 16}]"]
    assert new.points()[-1].name == "lr=0.3,batch_size=16"


def test_a_misspelt_factor_suggests_the_closest() -> None:
    values = classic_values()
    values["factors"] = {"conv_activaton": ["relu"]}
    with pytest.raises(
        OptionError, match="factor 'conv_activaton'; did you mean 'conv_activation'"
    ):
        StudySpec.from_dict(values)
    values["factors"] = {"c1_kernel_size": [29]}
    values["base"]["image_size"] = 28
    with pytest.raises(OptionError, match="c1_kernel_size=29 is larger than the image allows"):
        StudySpec.from_dict(values)
