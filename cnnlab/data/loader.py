"""The batch iterator over an in-memory dataset: `BatchLoader`.

Each epoch indexes the decoded uint8 tensor in a seeded order, moves whole batches to the
device, and normalizes and augments them there: no per-image Python work, no worker processes.
On a GPU the dataset lives in device memory when it fits (`fits_on_device`: at most half the
free memory, the rest is for the model); otherwise it stays in host memory and each batch is
gathered into pinned memory and copied without blocking, so the copy overlaps the computation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from cnnlab.data.memory import TensorDataset

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# The share of the free GPU memory a resident dataset may take; the rest is for the model.
RESIDENT_SHARE = 0.5


def dataset_bytes(dataset: TensorDataset) -> int:
    """Bytes of the dataset's images and labels."""
    tensors = (dataset.images, dataset.labels)
    return sum(t.numel() * t.element_size() for t in tensors)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` of data may live on `device` (CUDA: within half its free memory).

    The CPU holds the data where it is; MPS shares the host's memory, so it always fits.
    """
    if device.type == "cpu":
        return False
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE * free


class BatchLoader:
    """Serves `(images, labels)` batches of a `TensorDataset`, normalized floats on `device`.

    Shuffling and augmentation draw from a generator seeded by `(seed, epoch)`, so an epoch is
    reproducible on its own (which is what makes resume exact). `shard=(rank, world_size)`
    gives each data-parallel process its own slice of every epoch's permutation: with
    `even_shards` (for training) all slices have the same length, so every process takes the
    same number of steps, and the few images left over are skipped that epoch; without it (for
    evaluation) the slices cover every image once and differ in length by at most one.
    `drop_tiny_last` leaves out a last batch too small for batch norm's statistics (fewer than
    `batch_size / 4` or 2 images); the order changes every epoch, so no image is always left out.
    `resident` says whether the data live on an accelerator `device`; None decides by
    `fits_on_device`. Without it, batches stream from host memory through pinned buffers.
    """

    def __init__(
        self,
        dataset: TensorDataset,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_tiny_last: bool = False,
        augment: BatchTransform | None = None,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
        even_shards: bool = True,
        channels_last: bool = False,
        resident: bool | None = None,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.drop_tiny_last = drop_tiny_last
        self.augment = augment
        self.seed = seed
        self.rank, self.world_size = shard
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"shard {shard} is not (rank, world_size) with 0 <= rank < world_size")
        self.even_shards = even_shards
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0
        channels = dataset.image_shape[0]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels} channels")
        # Fold the 1/255 scaling into the normalization: x * scale + shift.
        std_tensor = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_tensor)).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean) / std_tensor).view(1, -1, 1, 1).to(self.device)
        # Datasets that fit live on the accelerator once, so batches never cross the bus.
        if resident is None:
            resident = fits_on_device(dataset_bytes(dataset), self.device)
        self.resident = resident and self.device.type != "cpu"
        home = self.device if self.resident else torch.device("cpu")
        self.images, self.labels = dataset.images.to(home), dataset.labels.to(home)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration uses."""
        self.epoch = epoch

    def _shard_bounds(self) -> tuple[int, int]:
        """Where this process's slice of an epoch's order starts and stops."""
        count = len(self.dataset)
        if self.even_shards:
            per_rank = count // self.world_size
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return count * self.rank // self.world_size, count * (self.rank + 1) // self.world_size

    def _indices(self) -> torch.Tensor:
        count = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)
        start, stop = self._shard_bounds()
        return order[start:stop]

    @property
    def num_samples(self) -> int:
        """Images in this process's slice of an epoch (before a tiny last batch is dropped)."""
        start, stop = self._shard_bounds()
        return stop - start

    @property
    def drops_last(self) -> bool:
        """Whether each epoch leaves out its last, tiny batch (see `drop_tiny_last`)."""
        remainder = self.num_samples % self.batch_size
        tiny = remainder < 2 or 4 * remainder < self.batch_size
        several_batches = self.num_samples > self.batch_size
        return self.drop_tiny_last and remainder > 0 and tiny and several_batches

    @property
    def images_per_epoch(self) -> int:
        """Images this process trains on per epoch."""
        if self.drops_last:
            return self.num_samples - self.num_samples % self.batch_size
        return self.num_samples

    def __len__(self) -> int:
        return -(-self.images_per_epoch // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # One copy of the epoch's order to the device: a blocking copy per step would make the
        # host wait for the GPU every step.
        order = self._indices().to(self.images.device, non_blocking=True)
        generator = torch.Generator().manual_seed(self.seed * 100_019 + self.epoch + 1)
        for step in range(len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images, labels = (
                self._to_device(self.images[index]),
                self._to_device(self.labels[index]),
            )
            images = images.float().mul_(self.scale).add_(self.shift)
            if self.augment is not None:
                images = self.augment(images, generator)
            yield images.contiguous(memory_format=self.memory_format), labels

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A gathered batch on the device; from host memory through a pinned buffer on CUDA.

        A copy from ordinary (pageable) memory would block the host; PyTorch's caching host
        allocator recycles the pinned buffers once their copies have finished.
        """
        if batch.device == self.device:
            return batch
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)
