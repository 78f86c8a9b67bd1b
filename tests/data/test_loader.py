"""BatchLoader: normalization, per-epoch reproducibility, sharding, batching, augmentation."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.augment import HorizontalFlip
from cnnlab.data.loader import BatchLoader, dataset_bytes, fits_on_device
from cnnlab.data.memory import TensorDataset


def _dataset(count: int = 50, channels: int = 3) -> TensorDataset:
    images = torch.randint(0, 256, (count, channels, 4, 4), dtype=torch.uint8)
    # The label is the image's index, so every batch says which images it holds.
    return TensorDataset(images, torch.arange(count), [str(i) for i in range(count)])


def _labels(loader: BatchLoader) -> list[int]:
    return [label for _, labels in loader for label in labels.tolist()]


def test_batches_are_normalized_images_in_order() -> None:
    dataset = _dataset(channels=2)
    mean, std = (0.2, 0.6), (0.5, 0.25)
    loader = BatchLoader(dataset, 16, mean=mean, std=std)
    images, labels = next(iter(loader))
    raw = dataset.images[:16].double() / 255
    expected = (raw - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    assert images.dtype == torch.float32 and torch.equal(labels, torch.arange(16))
    torch.testing.assert_close(images.double(), expected, rtol=1e-5, atol=1e-5)


def test_only_a_tiny_last_batch_is_dropped() -> None:
    def served(count: int, batch: int, drop: bool = True) -> int:
        loader = BatchLoader(
            _dataset(count), batch, mean=(0,) * 3, std=(1,) * 3, drop_tiny_last=drop
        )
        assert len(loader) == -(-loader.images_per_epoch // batch)
        assert len(_labels(loader)) == loader.images_per_epoch
        return loader.images_per_epoch

    assert served(50, 16, drop=False) == 50
    assert served(50, 16) == 48  # a last batch of 2 is under a quarter of 16
    assert served(245, 128) == 245  # 117 images are no tiny batch: all are used
    assert served(9, 4) == 8  # a last batch of one image
    assert served(10, 4) == 10  # 2 images are half a batch
    assert served(10, 16) == 10  # one batch, smaller than batch_size: kept whole


def test_a_dropped_last_batch_is_a_different_one_each_epoch() -> None:
    loader = BatchLoader(
        _dataset(50), 16, mean=(0,) * 3, std=(1,) * 3, shuffle=True, drop_tiny_last=True
    )
    seen: set[int] = set()
    for epoch in range(10):
        loader.set_epoch(epoch)
        labels = _labels(loader)
        assert len(labels) == 48
        seen |= set(labels)
    assert seen == set(range(50))


def test_shuffling_is_reproducible_per_epoch_and_differs_across_epochs() -> None:
    def order(epoch: int, seed: int = 1) -> list[int]:
        loader = BatchLoader(_dataset(), 8, mean=(0,) * 3, std=(1,) * 3, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return _labels(loader)

    assert order(0) == order(0) and sorted(order(0)) == list(range(50))
    assert order(0) != order(1) and order(0) != order(0, seed=2)


def test_even_shards_are_disjoint_and_equal_for_training() -> None:
    shards = [
        _labels(
            BatchLoader(_dataset(50), 8, mean=(0,) * 3, std=(1,) * 3, shuffle=True, shard=(r, 3))
        )
        for r in range(3)
    ]
    assert [len(shard) for shard in shards] == [16, 16, 16]  # two images sit out this epoch
    assert len(set().union(*map(set, shards))) == 48


def test_uneven_shards_cover_every_image_once_for_evaluation() -> None:
    loaders = [
        BatchLoader(_dataset(50), 8, mean=(0,) * 3, std=(1,) * 3, shard=(r, 3), even_shards=False)
        for r in range(3)
    ]
    shards = [_labels(loader) for loader in loaders]
    assert sorted(label for shard in shards for label in shard) == list(range(50))
    assert [len(loader) for loader in loaders] == [-(-len(s) // 8) for s in shards]


def test_bad_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="rank < world_size"):
        BatchLoader(_dataset(), 8, mean=(0,) * 3, std=(1,) * 3, shard=(2, 2))


def test_augmentation_follows_the_epoch_seed() -> None:
    dataset = _dataset()

    def first_batch(epoch: int) -> torch.Tensor:
        loader = BatchLoader(dataset, 50, mean=(0,) * 3, std=(1,) * 3, augment=HorizontalFlip())
        loader.set_epoch(epoch)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


def test_channels_last_batches() -> None:
    loader = BatchLoader(_dataset(), 8, mean=(0,) * 3, std=(1,) * 3, channels_last=True)
    images, _ = next(iter(loader))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_data_stay_in_host_memory_for_the_cpu() -> None:
    dataset = _dataset()
    assert dataset_bytes(dataset) == 50 * 3 * 4 * 4 + 50 * 8  # uint8 images, int64 labels
    assert not fits_on_device(dataset_bytes(dataset), torch.device("cpu"))
    loader = BatchLoader(dataset, 16, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert not loader.resident and loader.images.data_ptr() == dataset.images.data_ptr()
