"""TrainConfig: checking and normalizing values, YAML in and out, the hash, the run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.engine.config import TrainConfig
from cnnlab.errors import OptionError, UnknownNameError
from cnnlab.models.registry import resolve_options

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_yaml_round_trip_gives_an_equal_config(tmp_path: Path) -> None:
    config = TrainConfig(
        model="lenet5",
        model_options={"activation": "tanh"},
        augment=["flip", "cutout:6"],
        multi_scale=[24, 28],
        image_size=28,
        out=str(tmp_path / "run"),
    )
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    assert TrainConfig.from_yaml(path) == config


def test_missing_yaml_keys_keep_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("epochs: 7\nlr: 1e-3\n")  # YAML 1.1 reads 1e-3 as a string
    config = TrainConfig.from_yaml(path)
    assert (config.epochs, config.lr) == (7, 0.001)
    assert config.model == TrainConfig().model


def test_command_line_strings_are_normalized() -> None:
    config = TrainConfig(augment="flip, crop", multi_scale="24,28,32", epochs="3", lr="0.5")
    assert config.augment == ["flip", "crop:4"]  # canonical form, so equal runs hash equally
    assert config.multi_scale == [24, 28, 32]
    assert (config.epochs, config.lr) == (3, 0.5)


def test_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(OptionError, match="unknown config key 'epoch'; valid keys: model,.*epochs"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ({"optimizer": "lbfgs"}, UnknownNameError, "unknown optimizer 'lbfgs'"),
        ({"schedule": "linear"}, UnknownNameError, "unknown schedule 'linear'"),
        ({"init": "orthogonal"}, UnknownNameError, "unknown init 'orthogonal'"),
        ({"device": "tpu"}, UnknownNameError, "unknown device 'tpu'"),
        ({"augment": ["mixup"]}, UnknownNameError, "unknown augmentation 'mixup'"),
        ({"epochs": 0}, OptionError, "epochs must be at least 1"),
        ({"epochs": 2.5}, OptionError, "epochs must be an integer"),
        ({"epochs": True}, OptionError, "epochs must be an integer"),
        ({"lr": "fast"}, OptionError, "lr must be a number"),
        ({"lr": 0}, OptionError, "lr must be positive"),
        ({"amp": "yes"}, OptionError, "amp must be true or false"),
        ({"label_smoothing": 1.0}, OptionError, r"label_smoothing must be in \[0, 1\)"),
        ({"model_options": ["relu"]}, OptionError, "model_options must be a mapping"),
        ({"multi_scale": [0]}, OptionError, "multi_scale sizes must be positive"),
        ({"momentum": 2}, OptionError, "momentum must be below 1"),
        ({"epochs": 3, "warmup_epochs": 5}, OptionError, r"warmup_epochs \(5\) must be fewer"),
        ({"model_options": {"num_classes": 3}}, OptionError, "num_classes is set from the data"),
    ],
)
def test_bad_values_raise_one_clear_error(values: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize(
    ("text", "message"),
    [("epochs: [3\n", "not valid YAML \\(line 2\\)"), ("- 3\n", "must hold a mapping")],
)
def test_unreadable_yaml_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OptionError, match=message):
        TrainConfig.from_yaml(path)


def test_missing_file_is_an_option_error(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_hash_covers_what_changes_the_result_and_nothing_else() -> None:
    config = TrainConfig()
    assert config.hash() == TrainConfig().hash()
    assert config.replace(out="elsewhere", download=True).hash() == config.hash()
    assert config.replace(lr=0.05).hash() != config.hash()
    assert config.replace(model_options={"activation": "tanh"}).hash() != config.hash()


def test_run_dir_defaults_to_a_folder_named_by_model_data_and_hash(tmp_path: Path) -> None:
    config = TrainConfig(data="folder:/some/images dir")
    assert (
        config.run_dir == Path("runs") / f"lenet5_modern-folder_some_images_dir-{config.hash()[:8]}"
    )
    assert config.replace(out=str(tmp_path)).run_dir == tmp_path


def test_replace_checks_its_changes() -> None:
    with pytest.raises(OptionError, match="unknown config key 'learning_rate'"):
        TrainConfig().replace(learning_rate=0.1)
    with pytest.raises(OptionError, match="batch_size must be at least 1"):
        TrainConfig().replace(batch_size=0)


RECIPES = sorted(
    set(EXAMPLES.glob("*.yaml")) - set(EXAMPLES.glob("*_study.yaml"))
)  # studies: tests/studies


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_example_recipes_name_real_models_and_options(path: Path) -> None:
    config = TrainConfig.from_yaml(path)
    resolve_options(config.model, **config.model_options)  # raises on unknown models/options


def test_textbook_lenet_recipe_matches_d2l() -> None:
    config = TrainConfig.from_yaml(EXAMPLES / "lenet5_fashion_mnist.yaml")
    assert (config.model, config.data, config.optimizer) == ("lenet5", "fashion-mnist", "sgd")
    assert (config.lr, config.batch_size, config.epochs) == (0.9, 256, 10)
    assert config.model_options == {"activation": "sigmoid", "pooling": "avg"}


def test_every_config_field_has_help_and_a_train_flag() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for item in dataclasses.fields(TrainConfig):
        assert item.metadata["help"], item.name
        flag = "--" + item.name.replace("_", "-")
        assert (flag in result.output) == item.metadata["cli"], item.name
