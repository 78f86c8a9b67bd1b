"""`cnnlab explain` and `cnnlab features` end to end: figures written, bad options refused in one
line with nothing written, unreadable files skipped with a line each while the others go on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app, explain_cmd
from cnnlab.engine.checkpoint import save_checkpoint
from cnnlab.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from imagetrees import png_header_claiming  # noqa: E402
from overlays import HEIGHT, WIDTH, heat_under, object_mask, photo_with_object  # noqa: E402

CLASSES = ["zero", "one", "two"]


def _save(
    path: Path, model_name: str, image_shape: list[int], edit=None, **options: object
) -> Path:
    """An untrained model's checkpoint; `edit(model)` may set weights first."""
    model = create_model(model_name, num_classes=3, **options)
    if edit is not None:
        edit(model)
    channels = image_shape[0]
    save_checkpoint(
        path,
        {
            "model_name": model.model_name,
            "model_options": model.model_options,
            "model_state": model.state_dict(),
            "classes": CLASSES,
            "mean": [0.5] * channels,
            "std": [0.25] * channels,
            "image_shape": image_shape,
        },
    )
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def lenet(tmp_path: Path) -> Path:
    """A run folder with an (untrained) LeNet-5 for 1x28x28 digits."""
    return _save(tmp_path / "run" / "best.pt", "lenet5_modern", [1, 28, 28], image_size=28).parent


@pytest.fixture
def resnet(tmp_path: Path) -> Path:
    return _save(tmp_path / "resnet20.pt", "resnet20", [3, 32, 32])


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    """A grayscale and a color PNG of other sizes than the models', and a file that is not one."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    paths = {"gray": folder / "gray.png", "color": folder / "color.png", "bad": folder / "bad.png"}
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(paths["gray"])
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths["color"])
    paths["bad"].write_text("not an image")
    return paths


def _invoke(runner: CliRunner, *args: object):
    return runner.invoke(app, [str(arg) for arg in args])


def _assert_refused(result, message: str, out: Path) -> None:
    """Exit code 2, one red line holding `message`, and no output folder."""
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_explain_writes_one_figure_per_image_and_method_and_a_grid(
    runner: CliRunner, lenet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _invoke(
        runner, "explain", lenet, pictures["gray"], pictures["color"], "-m", "gradcam,saliency",
        "--method", "gradcam++", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pairs = [(stem, method) for stem in ("gray", "color")
             for method in ("gradcam", "saliency", "gradcam++")]  # fmt: skip
    names = {f"{stem}.{method}{kind}.png" for stem, method in pairs for kind in ("", ".overlay")}
    assert {path.name for path in out.iterdir()} == names | {"comparison.png"}
    width, height = _png_size(out / "comparison.png")
    assert width > height > 300  # 2 rows, 4 columns
    assert _png_size(out / "gray.gradcam.png")[0] > 300
    assert _png_size(out / "gray.saliency.overlay.png") == (30, 30)  # the photos' own sizes
    assert _png_size(out / "color.gradcam++.overlay.png") == (40, 40)
    assert f"note: {pictures['color']}: color image converted to grayscale" in result.stdout
    assert "features.s4, input" in result.stdout


def test_explain_sanity_writes_tables_and_a_figure(
    runner: CliRunner, lenet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _invoke(runner, "explain", lenet, pictures["gray"], "--sanity", "--out", out)
    assert result.exit_code == 0, result.output
    figures = {"gray.gradcam.png", "gray.gradcam.overlay.png", "sanity.png"}
    assert {path.name for path in out.iterdir()} == figures | {"sanity.md", "sanity.csv"}
    assert "Model randomization" in result.stdout and "classifier.output" in result.stdout
    assert (out / "sanity.csv").read_text().startswith("test,step,layer,method,value\n")


def test_cam_on_a_network_with_global_average_pooling(
    runner: CliRunner, resnet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    result = _invoke(runner, "explain", resnet, pictures["gray"], "-m", "cam", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "grayscale image converted to color" in result.stdout
    assert (tmp_path / "o" / "gray.cam.png").is_file()


@pytest.mark.parametrize(
    ("command", "arguments", "message"),
    [
        ("explain", ["--layer", "features.c9"],
         "unknown layer 'features.c9'; layers with feature maps: "
         "features.c1, features.c1_bn, features.c1_act, features.s2"),
        ("explain", ["-m", "cam"], "CAM needs a network that ends in global average pooling and "
                                   "one linear layer; lenet5_modern does not"),
        ("explain", ["-m", "gradcam,lime"], "unknown method 'lime'; choose from: cam, gradcam"),
        ("explain", ["--target", "seven"],
         "unknown class 'seven'; give 'predicted', an index from 0 to 2"),
        ("explain", ["--target", "3"], "unknown class '3'"),
        ("features", ["--layer", "features.s9"],
         "unknown layer 'features.s9'; layers with feature maps: features.c1, "),
        ("features", ["--layer", "classifier.c5"],
         "layer 'classifier.c5' has no feature maps (it is not in the convolutional trunk)"),
        ("features", [], "give --layer NAME (with an IMAGE) to draw feature maps, or --filters"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    runner: CliRunner,
    lenet: Path,
    pictures: dict[str, Path],
    tmp_path: Path,
    command: str,
    arguments: list[str],
    message: str,
) -> None:
    out = tmp_path / "out"
    arguments = [str(pictures["bad"]) if argument == "bad" else argument for argument in arguments]
    result = _invoke(runner, command, lenet, pictures["gray"], *arguments, "--out", out)
    _assert_refused(result, message, out)


def test_unreadable_files_are_skipped_with_a_line_each_and_the_others_explained(
    runner: CliRunner, lenet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    bomb = tmp_path / "pictures" / "bomb.png"
    bomb.write_bytes(png_header_claiming(100_000, 100_000))
    out = tmp_path / "out"
    result = _invoke(
        runner, "explain", lenet, pictures["bad"], bomb, pictures["gray"], "missing.png", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {"gray.gradcam.png", "gray.gradcam.overlay.png"}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped: ") for line in lines)
    assert "bad.png: not a readable image" in lines[0]
    assert "bomb.png: image too large to decode safely" in lines[1]
    assert "missing.png: no such file" in lines[2]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["bad"], "bad.png: not a readable image"),
        (["missing.png"], "missing.png: no such file"),
        (["bad", "missing.png"], "none of the 2 files is usable (first: "),
    ],
)
def test_no_usable_file_is_one_line_and_writes_nothing(
    runner: CliRunner, lenet: Path, pictures: dict[str, Path], tmp_path: Path, files, message
) -> None:
    out = tmp_path / "out"
    paths = [pictures["bad"] if name == "bad" else name for name in files]
    _assert_refused(_invoke(runner, "explain", lenet, *paths, "--out", out), message, out)


def test_a_shared_activation_is_refused(
    runner: CliRunner, resnet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _invoke(
        runner, "features", resnet, pictures["color"], "--layer", "layer1.0.relu", "-o", out
    )
    _assert_refused(result, "'layer1.0.relu' runs more than once per forward pass", out)


def test_checkpoint_of_an_unknown_model_is_one_line(
    runner: CliRunner, tmp_path: Path, pictures: dict[str, Path]
) -> None:
    checkpoint = _save(tmp_path / "odd.pt", "resnet20", [3, 32, 32])
    state = torch.load(checkpoint, weights_only=True)
    state["model_name"] = "resnet21"
    torch.save(state, checkpoint)
    result = _invoke(runner, "explain", checkpoint, pictures["gray"], "--out", tmp_path / "out")
    message = "cannot rebuild the checkpoint's model 'resnet21': unknown model"
    _assert_refused(result, message, tmp_path / "out")


def test_features_draws_a_layer_and_the_first_filters(
    runner: CliRunner, resnet: Path, pictures: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "features"
    result = _invoke(
        runner, "features", resnet, pictures["color"], "--layer", "layer1", "--filters", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {
        "color.layer1.png", "color.layer1.overlay.png", "filters.png"
    }  # fmt: skip
    assert min(_png_size(out / "filters.png")) > 200


def test_features_of_a_folder_draw_a_grid_per_image_up_to_the_cap(
    runner: CliRunner,
    resnet: Path,
    pictures: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = pictures["gray"].parent  # bad.png, color.png, gray.png
    out = tmp_path / "features"
    result = _invoke(
        runner, "features", resnet, folder, "--layer", "layer1", "--at-input-size", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {"color.layer1.png", "gray.layer1.png"}
    assert "skipped: " in result.stderr and "bad.png" in result.stderr
    assert "not drawn" not in result.stdout

    monkeypatch.setattr(explain_cmd, "FEATURE_IMAGES", 1)
    capped = tmp_path / "capped"
    result = _invoke(runner, "features", resnet, folder, "--layer", "layer1", "-o", capped)
    assert result.exit_code == 0, result.output
    assert {path.name for path in capped.iterdir()} == {
        "color.layer1.png",
        "color.layer1.overlay.png",
    }
    note = f"note: 1 more file(s) in {folder} not drawn: at most 1 images are drawn, the first"
    assert note in result.stdout


def test_explain_draws_over_the_photo_at_its_size_capped_or_at_the_input_size(
    runner: CliRunner, lenet: Path, tmp_path: Path
) -> None:
    photo = photo_with_object(tmp_path / "photo.png")
    wide = tmp_path / "wide.png"
    Image.new("L", (1500, 1000), 90).save(wide)
    turned = tmp_path / "turned.jpg"  # stored 90x60, shown upright as 60x90
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    with Image.open(photo) as image:
        image.save(turned, exif=exif.tobytes())
    out = tmp_path / "out"
    result = _invoke(runner, "explain", lenet, photo, wide, turned, "-o", out)
    assert result.exit_code == 0, result.output
    figures = {f"{stem}.gradcam.png" for stem in ("photo", "wide", "turned")}
    overlays = {name.replace(".png", ".overlay.png") for name in figures}
    assert {path.name for path in out.iterdir()} == figures | overlays
    assert _png_size(out / "photo.gradcam.overlay.png") == (WIDTH, HEIGHT)
    assert _png_size(out / "wide.gradcam.overlay.png") == (1024, 683)  # longest side capped
    assert _png_size(out / "turned.gradcam.overlay.png") == (HEIGHT, WIDTH)

    at_input = tmp_path / "at-input"
    arguments = (photo, wide, turned, "--at-input-size", "-o", at_input)
    result = _invoke(runner, "explain", lenet, *arguments)
    assert result.exit_code == 0, result.output
    assert {path.name for path in at_input.iterdir()} == figures


def test_features_overlay_peaks_where_the_layer_fires_on_the_object(
    runner: CliRunner, tmp_path: Path
) -> None:
    """With non-negative first filters, conv1's mean map is largest on the bright object."""

    def positive_filters(model: torch.nn.Module) -> None:
        model.conv1.weight.data.abs_()

    checkpoint = _save(tmp_path / "r.pt", "resnet20", [1, 32, 32], positive_filters, in_channels=1)
    photo = photo_with_object(tmp_path / "photo.png")
    out = tmp_path / "features"
    result = _invoke(runner, "features", checkpoint, photo, "--layer", "conv1", "-o", out)
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {"photo.conv1.png", "photo.conv1.overlay.png"}
    with Image.open(photo) as image:
        gray = np.asarray(image, dtype=np.float64)
    heat = heat_under(out / "photo.conv1.overlay.png", gray)
    assert heat.shape == (HEIGHT, WIDTH)
    assert object_mask()[np.unravel_index(heat.argmax(), heat.shape)]
    assert heat[object_mask()].mean() > 0.8 and heat[~object_mask()].mean() < 0.3
