"""One decoder for every entry point: each pixel mode decodes to the same tensor, upright and in
the colours a viewer shows, through an image tree (train, eval, `data stats`), `predict`,
explain's input loading and the server's upload route, which then agree on the prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import upload_files as files
from fastapi.testclient import TestClient
from zoo_checkpoints import make_checkpoint

from cnnlab.data import dataset_stats, load_dataset_details
from cnnlab.data.images import fit_square
from cnnlab.deploy.served import load_served_models
from cnnlab.deploy.server import create_app
from cnnlab.deploy.uploads import decode_upload
from cnnlab.engine.checkpoint import model_from_checkpoint
from cnnlab.engine.predict import normalize_images, predict_files
from cnnlab.explain.inputs import load_image_files

SIZE = 32  # the checkpoint's input: 3x32x32
WIDTH, HEIGHT = files.GALLERY_SIZE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("decoding") / "best.pt", "resnet20", SIZE)


@pytest.fixture(scope="module")
def client(checkpoint: Path):
    app = create_app(load_served_models([str(checkpoint)], copies=1))
    with TestClient(app) as test_client:
        yield test_client


def assert_halves(image: torch.Tensor, left: tuple[int, ...], right: tuple[int, ...]) -> None:
    """`image` (3, HEIGHT, WIDTH) shows `left` on its left half and `right` on its right half
    (JPEG's blocks blur a few levels, and only at the edge between the halves)."""
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    halves = {"left": image[:, :, : WIDTH // 2 - 4], "right": image[:, :, WIDTH // 2 + 4 :]}
    for side, expected in (("left", left), ("right", right)):
        pixels = halves[side].flatten(1).int()
        error = (pixels - torch.tensor(expected).view(3, 1)).abs().max().item()
        assert error <= 3, f"{side} half: {pixels[:, 0].tolist()} is not {expected}"


@pytest.mark.filterwarnings("ignore:val_fraction")  # two classes of one image: all training
@pytest.mark.parametrize("mode", list(files.GALLERY))
def test_every_mode_decodes_alike_through_every_entry_point(
    mode: str, checkpoint: Path, client: TestClient, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    suffix, make, left, right = files.GALLERY[mode]
    data = make()
    path = tmp_path / "tree" / "mode" / f"image{suffix}"
    plain = tmp_path / "tree" / "plain" / "image.png"
    for file, content in ((path, data), (plain, files.GALLERY["RGB"][1]())):
        file.parent.mkdir(parents=True)
        file.write_bytes(content)

    # An image tree, as train, eval and `data stats` load it: both files are WIDTHxHEIGHT once
    # upright, so the tree keeps that size.
    details = load_dataset_details(f"folder:{tmp_path / 'tree'}")
    train = details.splits.train
    assert details.splits.classes == ["mode", "plain"] and details.skipped == []
    from_tree = train.images[train.labels == 0][0]
    assert_halves(from_tree, left, right)
    stats = dataset_stats(details).splits["train"]
    assert (stats.height["max"], stats.width["max"]) == (HEIGHT, WIDTH)

    # predict, explain (and features) and serve, at the model's input size.
    expected = fit_square(from_tree, SIZE)
    model, state = model_from_checkpoint(checkpoint)
    assert torch.equal(load_image_files([path], state).pixels[0], expected)
    assert torch.equal(decode_upload(data, channels=3, size=SIZE), expected)

    (predicted,) = predict_files(
        model, [path], mean=state["mean"], std=state["std"], image_shape=state["image_shape"],
        classes=state["classes"], topk=3,
    )  # fmt: skip
    with torch.no_grad():
        inputs = normalize_images(expected[None], state["mean"], state["std"], "cpu")
        direct = model.eval()(inputs).softmax(dim=-1)[0].topk(3)
    assert predicted.classes == [state["classes"][index] for index in direct.indices.tolist()]
    np.testing.assert_allclose(predicted.probabilities, direct.values.tolist(), atol=1e-6)

    served = client.post("/api/predict?topk=3", content=data, headers={"Content-Type": "image/*"})
    assert served.status_code == 200, served.text
    assert [row["class"] for row in served.json()["top"]] == predicted.classes
    np.testing.assert_allclose(
        [row["probability"] for row in served.json()["top"]], predicted.probabilities, atol=1e-5
    )
