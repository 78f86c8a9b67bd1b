"""`evaluate` and `predict_files` against forward passes and metrics computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab.data.images import read_image
from cnnlab.data.loader import BatchLoader
from cnnlab.data.memory import TensorDataset
from cnnlab.engine.evaluate import evaluate
from cnnlab.engine.predict import predict_files
from cnnlab.errors import DataError, OptionError
from cnnlab.models import create_model, register_model
from cnnlab.models.registry import in_channels_option, num_classes_option

CLASSES = ["circle", "square", "triangle", "star", "heart", "moon", "cross"]
MEAN, STD = (0.4,), (0.2,)


@register_model(
    input_size=(1, 8, 8),
    paper="test fixture",
    options={"num_classes": num_classes_option(7), "in_channels": in_channels_option(1)},
)
def evaluate_test_net(**options) -> nn.Module:
    """A small convnet with batch norm, so eval mode changes its outputs."""
    num_classes, in_channels = options["num_classes"], options["in_channels"]
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, num_classes),
    )


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("evaluate_test_net")
    model.train()(torch.randn(32, 1, 8, 8))  # non-trivial running statistics
    return model


@pytest.fixture
def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, len(CLASSES), (50,), generator=generator)
    return TensorDataset(images, labels, CLASSES)


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - MEAN[0]) / STD[0]


def test_evaluate_matches_a_direct_forward_pass(model: nn.Module, dataset: TensorDataset) -> None:
    loader = BatchLoader(dataset, batch_size=16, mean=MEAN, std=STD)
    result = evaluate(model, loader, CLASSES)

    with torch.no_grad():
        logits = model.eval()(normalize(dataset.images))
    model.train()
    labels = dataset.labels
    ranks = (logits > logits.gather(1, labels[:, None])).sum(dim=1)  # 0 for the top class
    expected_confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.int64)
    for true, predicted in zip(labels.tolist(), logits.argmax(1).tolist(), strict=True):
        expected_confusion[true, predicted] += 1

    assert result.count == 50
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result.top1 == pytest.approx((ranks == 0).float().mean().item())
    assert result.top5 == pytest.approx((ranks < 5).float().mean().item())
    assert result.top1_error == pytest.approx(1 - result.top1)
    assert torch.equal(result.confusion, expected_confusion)
    assert model.training, "evaluate restores the model's training flag"


def test_test_time_flips_score_the_mean_logits_of_each_image_and_its_mirror(
    model: nn.Module, dataset: TensorDataset
) -> None:
    loader = BatchLoader(dataset, batch_size=16, mean=MEAN, std=STD)
    plain, flipped = evaluate(model, loader, CLASSES), evaluate(model, loader, CLASSES, flip=True)
    with torch.no_grad():
        images = normalize(dataset.images)
        mirrored = torch.stack([image[:, :, torch.arange(7, -1, -1)] for image in images])
        logits = (model.eval()(images) + model(mirrored)) / 2
    assert flipped.loss == pytest.approx(F.cross_entropy(logits, dataset.labels).item(), rel=1e-5)
    assert flipped.top1 == pytest.approx((logits.argmax(1) == dataset.labels).float().mean().item())
    assert flipped.loss != plain.loss  # the mirror images count


def test_evaluate_does_not_depend_on_the_batch_size(
    model: nn.Module, dataset: TensorDataset
) -> None:
    small = evaluate(model, BatchLoader(dataset, 3, mean=MEAN, std=STD), CLASSES)
    whole = evaluate(model, BatchLoader(dataset, 50, mean=MEAN, std=STD), CLASSES)
    assert small.loss == pytest.approx(whole.loss, rel=1e-5)
    assert (small.top1, small.top5) == (whole.top1, whole.top5)
    assert torch.equal(small.confusion, whole.confusion)


def test_per_class_accuracy_and_plain_dict(model: nn.Module, dataset: TensorDataset) -> None:
    present = dataset.labels != CLASSES.index("cross")
    without_cross = dataset.subset(present.nonzero().flatten())
    result = evaluate(model, BatchLoader(without_cross, 8, mean=MEAN, std=STD), CLASSES)

    per_class = result.per_class_accuracy
    assert per_class["cross"] is None
    circles = without_cross.labels == 0
    with torch.no_grad():
        predictions = model.eval()(normalize(without_cross.images[circles])).argmax(1)
    assert per_class["circle"] == pytest.approx((predictions == 0).float().mean().item())
    exported = result.to_dict()
    assert exported["confusion"] == result.confusion.tolist()
    assert exported["count"] == len(without_cross)


def test_evaluate_refuses_a_class_count_mismatch(model: nn.Module, dataset: TensorDataset) -> None:
    loader = BatchLoader(dataset, 16, mean=MEAN, std=STD)
    with pytest.raises(DataError, match="predicts 7 classes but the data has 2"):
        evaluate(model, loader, ["a", "b"])


def test_evaluate_refuses_an_empty_split(model: nn.Module, dataset: TensorDataset) -> None:
    empty = dataset.subset(torch.tensor([], dtype=torch.long))
    with pytest.raises(DataError, match="no images"):
        evaluate(model, BatchLoader(empty, 16, mean=MEAN, std=STD), CLASSES)


@pytest.fixture
def image_files(tmp_path: Path) -> dict[str, Path]:
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (12, 10, 3), dtype=torch.uint8, generator=generator).numpy()
    png = tmp_path / "photos" / "shape.png"
    png.parent.mkdir()
    Image.fromarray(pixels).save(png)
    jpeg = tmp_path / "photos" / "broken.jpg"
    Image.fromarray(pixels).resize((64, 64)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    return {"png": png, "jpeg": jpeg, "text": text, "folder": png.parent}


def predict(model: nn.Module, paths: list[Path], topk: int = 3) -> list:
    return predict_files(
        model, paths, mean=MEAN, std=STD, image_shape=(1, 8, 8), classes=CLASSES, topk=topk
    )


def test_predict_files_ranks_classes_by_probability(
    model: nn.Module, image_files: dict[str, Path]
) -> None:
    [prediction] = predict(model, [image_files["png"]], topk=3)

    with torch.no_grad():
        image = normalize(read_image(image_files["png"], channels=1, size=8)[None])
        probabilities = model.eval()(image).softmax(dim=1)[0]
    expected = probabilities.topk(3)
    assert prediction.error is None
    assert prediction.classes == [CLASSES[i] for i in expected.indices.tolist()]
    assert prediction.probabilities == pytest.approx(expected.values.tolist(), rel=1e-5)


def test_predict_files_reports_bad_files_and_goes_on(
    model: nn.Module, image_files: dict[str, Path]
) -> None:
    paths = [image_files["text"], image_files["jpeg"], image_files["png"], Path("/no/such.png")]
    results = predict(model, paths)

    assert [r.path for r in results] == paths
    errors = [r.error for r in results]
    assert errors[0] is not None and "notes.txt" in errors[0]
    assert errors[1] is not None and "broken.jpg" in errors[1]
    assert errors[2] is None and len(results[2].classes) == 3
    assert errors[3] is not None and "no such file" in errors[3]
    assert results[0].to_dict() == {"path": str(paths[0]), "error": errors[0]}


def test_predict_files_expands_folders_skipping_hidden_files(
    model: nn.Module, image_files: dict[str, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (image_files["folder"] / ".thumbnails").mkdir()
    for hidden in (".shape.png", ".thumbnails/shape.png"):
        (image_files["folder"] / hidden).write_bytes(image_files["png"].read_bytes())
    results = predict(model, [image_files["folder"], empty], topk=100)

    assert [r.path.name for r in results] == ["broken.jpg", "shape.png", "empty"]
    assert results[1].error is None
    assert sorted(results[1].classes) == sorted(CLASSES)
    assert sum(results[1].probabilities) == pytest.approx(1.0, rel=1e-5)
    assert results[2].error is not None and "no images" in results[2].error


def test_predict_files_batches_like_a_single_pass(
    model: nn.Module, image_files: dict[str, Path]
) -> None:
    paths = [image_files["png"], image_files["text"]] * 3
    one_by_one = predict_files(
        model, paths, mean=MEAN, std=STD, image_shape=(1, 8, 8), classes=CLASSES, batch_size=1
    )
    together = predict(model, paths, topk=5)
    assert [r.error is None for r in one_by_one] == [r.error is None for r in together]
    for single, batched in zip(one_by_one, together, strict=True):
        assert single.classes == batched.classes
        assert single.probabilities == pytest.approx(batched.probabilities, rel=1e-5)


def test_predict_files_refuses_topk_below_one(model: nn.Module, image_files: dict) -> None:
    with pytest.raises(OptionError, match="topk must be at least 1"):
        predict(model, [image_files["png"]], topk=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_matches_cpu(model: nn.Module, dataset: TensorDataset) -> None:
    on_cpu = evaluate(model, BatchLoader(dataset, 16, mean=MEAN, std=STD), CLASSES)
    model.cuda()
    on_gpu = evaluate(model, BatchLoader(dataset, 16, mean=MEAN, std=STD, device="cuda"), CLASSES)
    with_amp = evaluate(
        model, BatchLoader(dataset, 16, mean=MEAN, std=STD, device="cuda"), CLASSES, amp=True
    )
    # cuDNN may use TF32 and AMP float16: close, and at most one near-tie flips its prediction.
    assert on_gpu.loss == pytest.approx(on_cpu.loss, rel=1e-3)
    assert with_amp.loss == pytest.approx(on_cpu.loss, rel=2e-2)
    assert on_gpu.confusion.sum() == on_cpu.confusion.sum() == len(dataset)
    assert abs(on_gpu.top1 - on_cpu.top1) <= 1 / len(dataset)
