"""Decoded-once, memory-mapped cache of image files.

A list of image files is decoded once, at the resolution and channel count asked for, into one
uint8 `(N, C, H, W)` array saved as `.npy` in `$CNNLAB_CACHE/images` (`$CNNLAB_CACHE` defaults
to `~/.cache/cnnlab`) and opened as a memory map on every later load. The entry's name hashes
the file list with each file's size and modification time, the resolution, the channels and the
decoder's version (`cnnlab.data.images.DECODER_VERSION`): a changed file, or a change in how
files are decoded, gives a new entry; an unchanged tree is never decoded twice. Entries are
written to a temporary file and moved into place with `os.replace`, metadata last, so an
interrupted decode leaves nothing a later run could take for a finished entry.

Each file goes through the one decoder, `cnnlab.data.images.read_image`, whose decoders release
the GIL, so a few threads share the work. Files it refuses (not an image, corrupt, too large)
are skipped with a `SkippedFileWarning` and listed in the entry, so later loads report them
without re-reading.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from cnnlab.data.images import DECODER_VERSION, ImageError, native_shape, read_image, resize_uint8
from cnnlab.errors import CnnlabWarning, DataError
from cnnlab.fileio import writable_directory

CACHE_FORMAT = 1
DEFAULT_IMAGE_SIZE = 224
"""Side length used when the images of a tree differ in size and no size was asked for."""

_CHUNK = 256  # files per decoding task
_PROGRESS_FROM = 2_000  # show a progress bar from this many files on
_CACHE_FIX = "point $CNNLAB_CACHE at a writable folder"


class SkippedFileWarning(CnnlabWarning):
    """A file in an image tree that is not a readable image; it is left out of the dataset."""


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


def warn_skipped(skipped: SkippedFile) -> None:
    """Emit the one warning every skipped file gets."""
    warnings.warn(f"skipping {skipped.path}: {skipped.reason}", SkippedFileWarning, stacklevel=3)


@dataclass
class DecodedImages:
    """The readable files of a list, decoded: `images[i]` came from `paths[kept[i]]`."""

    images: torch.Tensor  # (K, C, H, W) uint8, backed by the memory-mapped cache entry
    kept: torch.Tensor  # (K,) int64 positions in the decoded file list
    original_sizes: torch.Tensor  # (K, 2) int64 (height, width) of each file before resizing
    skipped: list[SkippedFile]


def cache_dir() -> Path:
    """cnnlab's cache: `$CNNLAB_CACHE`, default `~/.cache/cnnlab`."""
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab")


def cached_tensors(
    name: str, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """`build()`'s tensors, computed once and kept in the cache as `tensors/<name>.pt`.

    `name` must change whenever `build`'s result would (put a version in it).
    """
    path = cache_dir() / "tensors" / f"{name}.pt"
    try:
        return torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        pass  # absent or unreadable: build it again
    tensors = build()
    writable_directory(path.parent, _CACHE_FIX)
    with _temporary_file(path.parent, ".pt") as partial:
        torch.save(tensors, partial)
        os.replace(partial, path)
    return tensors


def cache_key(paths: Sequence[str | Path], size: int | None, channels: int) -> str:
    """Hash of the file list (path, size, mtime of each file), the resolution, the channels and
    the decoder's version."""
    key = f"cnnlab-images/{CACHE_FORMAT}/decoder-{DECODER_VERSION}/{size}/{channels}\n"
    digest = hashlib.sha256(key.encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"{path}: cannot read file ({error.strerror})") from None
        digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decode_images(
    paths: Sequence[str | Path], *, size: int | None, channels: int, progress: bool = True
) -> DecodedImages:
    """Decode `paths` to uint8 `(K, channels, H, W)`, through the on-disk cache.

    `size` resizes every image to `size`x`size`. With `size=None` the images keep their common
    size when they all share one, and are resized to `DEFAULT_IMAGE_SIZE` square otherwise.
    Unreadable files are warned about and skipped; none readable at all raises `DataError`.
    """
    if not paths:
        raise DataError("no image files to decode")
    key = cache_key(paths, size, channels)
    decoded = _open_entry(key, len(paths))
    if decoded is None:
        decoded = _write_entry(key, paths, size, channels, progress)
    for skipped in decoded.skipped:
        warn_skipped(skipped)
    return decoded


def _entry_paths(key: str) -> tuple[Path, Path]:
    directory = cache_dir() / "images"
    return directory / f"{key}.npy", directory / f"{key}.json"


def _open_entry(key: str, file_count: int) -> DecodedImages | None:
    """The finished cache entry `key`, memory-mapped, or None when there is none."""
    array_path, meta_path = _entry_paths(key)
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="c")  # copy-on-write: writable, never written back
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT:
        return None
    skipped_positions = {entry["index"] for entry in meta["skipped"]}
    kept = [i for i in range(file_count) if i not in skipped_positions]
    if len(kept) != len(array):
        return None
    return DecodedImages(
        images=torch.from_numpy(array),
        kept=torch.tensor(kept, dtype=torch.int64),
        original_sizes=_decode_sizes(meta["original_sizes"]),
        skipped=[SkippedFile(entry["path"], entry["reason"]) for entry in meta["skipped"]],
    )


class _MixedSizes(Exception):
    """Raised while decoding at the common size when an image of another size turns up."""


def _write_entry(
    key: str, paths: Sequence[str | Path], size: int | None, channels: int, progress: bool
) -> DecodedImages:
    array_path, meta_path = _entry_paths(key)
    writable_directory(array_path.parent, _CACHE_FIX)
    if size is not None:
        shape, resize = (size, size), True
    else:  # optimistic: decode at the first image's size, start over at the default on a mismatch
        shape, resize = _first_image_size(paths), False
    with _temporary_file(array_path.parent, ".npy") as decoded_path:
        try:
            sizes, skipped = _decode_to_file(decoded_path, paths, channels, shape, resize, progress)
        except _MixedSizes:
            shape = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
            sizes, skipped = _decode_to_file(decoded_path, paths, channels, shape, True, progress)
        if len(skipped) == len(paths):
            first = skipped[0][1]
            raise DataError(
                f"none of the {len(paths)} files is a readable image "
                f"(first: {first.path}: {first.reason})"
            )
        skipped_positions = {position for position, _ in skipped}
        kept = [i for i in range(len(paths)) if i not in skipped_positions]
        if skipped:
            _compact(decoded_path, kept)
        os.replace(decoded_path, array_path)
    meta = {
        "format": CACHE_FORMAT,
        "original_sizes": _encode_sizes(sizes[kept]),
        "skipped": [{"index": i, "path": s.path, "reason": s.reason} for i, s in skipped],
    }
    with _temporary_file(meta_path.parent, ".json") as temporary_meta:
        temporary_meta.write_text(json.dumps(meta))
        os.replace(temporary_meta, meta_path)
    decoded = _open_entry(key, len(paths))
    assert decoded is not None, "a cache entry just written must open"
    return decoded


def _encode_sizes(sizes: np.ndarray) -> str:
    """(height, width) pairs as base64 int32: a tenth of the JSON list's parse time."""
    return base64.b64encode(sizes.astype("<i4").tobytes()).decode()


def _decode_sizes(text: str) -> torch.Tensor:
    pairs = np.frombuffer(base64.b64decode(text), dtype="<i4").reshape(-1, 2)
    return torch.from_numpy(pairs.astype(np.int64))


@contextmanager
def _temporary_file(directory: Path, suffix: str) -> Iterator[Path]:
    """A fresh file in `directory`, removed on exit unless it was moved away."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=suffix)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _first_image_size(paths: Sequence[str | Path]) -> tuple[int, int]:
    """Upright (height, width) of the first file whose header reads (a guess; decoding checks)."""
    for path in paths:
        try:
            return native_shape(path)[1:]
        except DataError:
            continue
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def _decode_to_file(
    target: Path,
    paths: Sequence[str | Path],
    channels: int,
    shape: tuple[int, int],
    resize: bool,
    progress: bool,
) -> tuple[np.ndarray, list[tuple[int, SkippedFile]]]:
    """Decode every file into the `.npy` at `target`.

    Returns each file's original (height, width) and the (position, reason) of skipped files.
    Raises `_MixedSizes` when `resize` is off and the files differ in size.
    """
    out = np.lib.format.open_memmap(
        target, mode="w+", dtype=np.uint8, shape=(len(paths), channels, *shape)
    )
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    skipped: list[tuple[int, SkippedFile]] = []
    mixed_sizes = threading.Event()

    def decode_chunk(start: int) -> int:
        stop = min(start + _CHUNK, len(paths))
        for position in range(start, stop):
            if mixed_sizes.is_set():
                break
            try:
                image = read_image(paths[position], channels)
            except ImageError as error:
                skipped.append((position, SkippedFile(str(paths[position]), error.reason)))
                continue
            sizes[position] = image.shape[1:]
            if tuple(image.shape[1:]) != shape:
                if not resize:
                    mixed_sizes.set()
                    break
                image = resize_uint8(image[None], shape[0])[0]  # resize targets are square
            out[position] = image.numpy()
        return stop - start

    # Decoders release the GIL; chunks of files keep the per-task overhead small.
    workers = min(4, os.cpu_count() or 1)
    with _progress_bar(len(paths), progress) as advance, ThreadPoolExecutor(workers) as pool:
        for done in pool.map(decode_chunk, range(0, len(paths), _CHUNK)):
            advance(done)
    out.flush()
    if mixed_sizes.is_set():
        raise _MixedSizes
    return sizes, sorted(skipped, key=lambda item: item[0])


def _compact(path: Path, kept: list[int]) -> None:
    """Rewrite the `.npy` at `path` with only the rows at `kept`."""
    full = np.load(path, mmap_mode="r")
    with _temporary_file(path.parent, ".npy") as compact_path:
        compact = np.lib.format.open_memmap(
            compact_path, mode="w+", dtype=np.uint8, shape=(len(kept), *full.shape[1:])
        )
        for start in range(0, len(kept), _CHUNK):
            compact[start : start + _CHUNK] = full[kept[start : start + _CHUNK]]
        compact.flush()
        del compact, full
        os.replace(compact_path, path)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for long decodes; yields `advance(n)`."""
    if not enabled or total < _PROGRESS_FROM:
        yield lambda _: None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"decoding {total:,} images", total=total)
        yield lambda count: bar.advance(task, count)
