"""ONNX export: every zoo family matches PyTorch in onnxruntime, and exported files predict.

Each family is exported at its smallest variant and a small input (the graph is the same at
any size); the larger ones take 5-30 s each on 2 cores and are marked slow.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from zoo_checkpoints import CLASSES, make_checkpoint

from cnnlab.cli import app
from cnnlab.deploy import export as export_module
from cnnlab.deploy.export import (
    ROUNDING_FACTOR,
    TOLERANCE,
    OnnxModel,
    export_onnx,
    float32_rounding,
    load_onnx_model,
)
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.predict import predict_files
from cnnlab.errors import CheckpointError, ExportError, OptionError

FAMILIES = [
    ("lenet5", 32),
    ("lenet5_modern", 28),
    ("alexnet_original", 67),  # LRN: no ONNX operator of its own in PyTorch's exporter
    ("nin", 67),
    ("resnet20", 32),
    pytest.param("alexnet", 63, marks=pytest.mark.slow),
    pytest.param("zfnet", 47, marks=pytest.mark.slow),
    pytest.param("vgg11", 32, marks=pytest.mark.slow),
    pytest.param("googlenet", 32, marks=pytest.mark.slow),
    pytest.param("inception_v3", 75, marks=pytest.mark.slow),
    pytest.param("resnet18", 32, marks=pytest.mark.slow),
    pytest.param("resnext50_32x4d", 32, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("lenet") / "best.pt", "lenet5_modern", 28)


@pytest.fixture(scope="module")
def lenet_onnx(lenet_checkpoint: Path) -> Path:
    out = lenet_checkpoint.with_suffix(".onnx")
    export_onnx(lenet_checkpoint, out)
    return out


@pytest.fixture
def digit_files(tmp_path: Path) -> list[Path]:
    generator = np.random.default_rng(0)
    paths = []
    for index in range(3):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(generator.integers(0, 256, (40, 30), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize(("name", "size"), FAMILIES)
def test_every_family_exports_and_matches_pytorch(tmp_path: Path, name: str, size: int) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt", name, size)
    report = export_onnx(checkpoint, tmp_path / "model.onnx")
    if report.max_abs_diff > TOLERANCE:  # deep networks: as close as float32 arithmetic allows
        assert report.max_abs_diff <= ROUNDING_FACTOR * report.float32_rounding
    assert report.images_checked == 4  # batches of 1 and 3: the example's 2 is not special
    graph = onnx.load(tmp_path / "model.onnx").graph
    assert [output.name for output in graph.output] == ["logits"]  # no auxiliary heads
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch size


def test_metadata_records_what_a_reader_needs(lenet_onnx: Path) -> None:
    metadata = {entry.key: entry.value for entry in onnx.load(lenet_onnx).metadata_props}
    assert metadata["model_name"] == "lenet5_modern"
    assert json.loads(metadata["classes"]) == CLASSES
    assert json.loads(metadata["mean"]) == [0.5]
    assert json.loads(metadata["std"]) == [0.25]
    assert json.loads(metadata["image_shape"]) == [1, 28, 28]
    assert metadata["input"] == "normalized float32"
    assert metadata["cnnlab_version"]


def test_included_preprocessing_takes_uint8_and_matches_pytorch(
    lenet_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "u8.onnx"
    export_onnx(lenet_checkpoint, out, include_preprocessing=True)
    onnx_model = OnnxModel(out)
    assert onnx_model.takes_uint8
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    model, _ = model_from_checkpoint(lenet_checkpoint)
    with torch.no_grad():
        expected = model((images / 255.0 - 0.5) / 0.25)
    torch.testing.assert_close(onnx_model(images), expected, atol=TOLERANCE, rtol=0)


def test_fixed_batch_export_runs_any_number_of_images(
    lenet_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fixed.onnx"
    report = export_onnx(lenet_checkpoint, out, dynamic_batch=False)
    assert not report.dynamic_batch
    onnx_model = OnnxModel(out)
    assert onnx_model.fixed_batch == 1
    assert onnx_model(torch.randn(3, 1, 28, 28)).shape == (3, len(CLASSES))


def test_export_off_by_more_than_float32_rounding_is_refused(
    lenet_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "max_difference", lambda *_: 0.5)  # a wrong graph
    out = tmp_path / "wrong.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0\.5 .* was not written"):
        export_onnx(lenet_checkpoint, out)
    assert not out.exists()


def test_float32_rounding_is_measured_against_float64(lenet_checkpoint: Path) -> None:
    model, _ = model_from_checkpoint(lenet_checkpoint)
    batch = torch.randn(2, 1, 28, 28)
    rounding = float32_rounding(model, [batch])
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(batch.double())
        assert rounding == pytest.approx((model(batch).double() - exact).abs().max().item())
    assert 0 < rounding < 1e-4


def test_opset_below_the_exporters_is_refused(lenet_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="at least 18"):
        export_onnx(lenet_checkpoint, tmp_path / "old.onnx", opset=13)


def test_onnx_predictions_equal_the_checkpoints(
    lenet_checkpoint: Path, lenet_onnx: Path, digit_files: list[Path]
) -> None:
    onnx_model, info = load_onnx_model(lenet_onnx)
    model, state = model_from_checkpoint(lenet_checkpoint)
    results = []
    for predictor, record in ((model, state), (onnx_model, info)):
        predictions = predict_files(
            predictor,
            digit_files,
            mean=record["mean"],
            std=record["std"],
            image_shape=record["image_shape"],
            classes=record["classes"],
            topk=3,
        )
        results.append(predictions)
    for from_torch, from_onnx in zip(*results, strict=True):
        assert from_onnx.classes == from_torch.classes
        np.testing.assert_allclose(from_onnx.probabilities, from_torch.probabilities, atol=1e-5)


def test_a_foreign_or_corrupt_onnx_file_is_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_text("not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        OnnxModel(corrupt)
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")


def test_cli_exports_then_predicts_with_the_onnx_file(
    lenet_checkpoint: Path, digit_files: list[Path], tmp_path: Path
) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    out = tmp_path / "cli.onnx"
    exported = runner.invoke(
        app, ["export", str(lenet_checkpoint.parent), "--out", str(out), "--include-preprocessing"]
    )
    assert exported.exit_code == 0, exported.output
    assert "max abs diff" in exported.output and "uint8 images" in exported.output
    predicted = runner.invoke(app, ["predict", str(out), *map(str, digit_files), "--json"])
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.output)
    assert [row["path"] for row in rows] == [str(path) for path in digit_files]
    assert all(row["top"][0]["class"] in CLASSES for row in rows)
    refused = runner.invoke(app, ["export", str(lenet_checkpoint), "--format", "tflite"])
    assert refused.exit_code == 2 and "unknown export format" in refused.output


def test_export_out_may_name_a_folder(lenet_checkpoint: Path, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    existing = tmp_path / "existing"
    existing.mkdir()
    into_existing = runner.invoke(app, ["export", str(lenet_checkpoint), "--out", str(existing)])
    assert into_existing.exit_code == 0, into_existing.output
    assert OnnxModel(existing / "lenet5_modern.onnx").info()["classes"] == CLASSES
    new_folder = tmp_path / "new"
    into_new = runner.invoke(app, ["export", str(lenet_checkpoint), "--out", f"{new_folder}/"])
    assert into_new.exit_code == 0, into_new.output
    assert (new_folder / "lenet5_modern.onnx").is_file()


def test_export_to_an_unwritable_place_is_one_line(lenet_checkpoint: Path) -> None:
    refused = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["export", str(lenet_checkpoint), "--out", "/proc/x.onnx"]
    )
    assert refused.exit_code == 2, refused.output
    assert refused.output.count("\n") == 1 and "/proc/x.onnx" in refused.output
