"""`cnnlab models` and `cnnlab summary` through the real typer app, and their option parsing."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.cli.options import parse_input_size, parse_options, parse_value
from cnnlab.errors import OptionError
from cnnlab.models import count_parameters, list_models

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_models_lists_every_registered_name() -> None:
    result = invoke("models")
    assert result.exit_code == 0, result.output
    assert all(name in result.stdout for name in list_models())


def test_models_filters_by_substring_or_pattern() -> None:
    assert f"{len(list_models('*resnet*'))} models" in invoke("models", "resnet").stdout
    assert f"{len(list_models('vgg1?'))} models" in invoke("models", "vgg1?").stdout


def test_summary_json_parses() -> None:
    result = invoke("summary", "vgg16", "--input", "3x224x224", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == 138_357_544
    assert data["activations"] == 15_237_608
    assert data["input_size"] == [3, 224, 224]
    assert data["layers"][0]["output_shape"] == [64, 224, 224]


def test_summary_options_reach_the_model() -> None:
    result = invoke(
        "summary",
        "resnet18",
        "--json",
        "--model-opt",
        "num_classes=10",
        "--model-opt",
        "in_channels=1",
    )
    data = json.loads(result.stdout)
    assert data["input_size"] == [1, 224, 224]
    assert data["params"] == count_parameters("resnet18", num_classes=10, in_channels=1)


def test_summary_table_shows_alexnet_shapes_as_in_the_paper() -> None:
    result = invoke("summary", "alexnet_original", "--input", "3x227x227")
    assert result.exit_code == 0, result.output
    shapes = defaultdict(list)  # layer type -> output shapes, in order
    for line in result.stdout.splitlines():
        if line.startswith("│"):
            _, _, layer_type, shape, *_ = (cell.strip() for cell in line.split("│"))
            shapes[layer_type].append(shape)
    assert shapes["Conv2d"][0] == "55×55×96"
    assert shapes["Linear"] == ["4096", "4096", "1000"]
    assert "GMACs" in result.stdout and "MB" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("summary", "no_such_net"),
        ("summary", "vgg16", "--input", "3x224"),
        ("summary", "vgg16", "--model-opt", "no_such_option=1"),
        ("summary", "vgg16", "--model-opt", "num_classes"),
        ("summary", "vgg16", "--input", "3x16x16"),
        ("models", "no_such_family"),
    ],
)
def test_bad_requests_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("-3", -3), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False)],
)
def test_parse_value_reads_numbers_and_booleans(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_value_leaves_other_text_as_string() -> None:
    assert parse_value("tanh") == "tanh"


def test_parse_options() -> None:
    assert parse_options(["num_classes=10", "activation = tanh", "pretrained=false"]) == {
        "num_classes": 10,
        "activation": "tanh",
        "pretrained": False,
    }
    for bad in (["num_classes"], ["=3"], ["a=1", "a=2"]):
        with pytest.raises(OptionError):
            parse_options(bad)


def test_parse_input_size() -> None:
    assert parse_input_size("3x224x224") == (3, 224, 224)
    assert parse_input_size("1×28×28") == (1, 28, 28)
    for bad in ("3x224", "3x0x4", "axbxc", "3x-1x4"):
        with pytest.raises(OptionError, match="CxHxW"):
            parse_input_size(bad)
