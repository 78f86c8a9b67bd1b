"""Image trees on disk: which files belong to a dataset, with which labels, in which split.

Two layouts are understood, neither of which opens an image:
  class folders   `ROOT/<class>/**/<image>` (torchvision's ImageFolder), or the same under
                  `ROOT/train/` plus `ROOT/test/` (or `ROOT/val/`) when both exist;
  prefix labels   `ROOT/<label>.<id>.<ext>` (Kaggle's dogs-vs-cats), or the same in `ROOT/train/`.
Files are listed in sorted order so that labels, splits and cache keys are reproducible. Hidden
files are ignored; other files without an image suffix are skipped with a warning. Symbolic
links are followed, except one that leads back into its own tree (a loop), which is an error.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.cache import SkippedFile, warn_skipped
from cnnlab.data.images import IMAGE_SUFFIXES
from cnnlab.errors import CnnlabWarning, DataError

TEST_SPLIT_NAMES = ("test", "val")
"""Sub-folders taken as the test split beside `train/`, in order of preference: with both,
`test/` is the test split and `val/` is left out, with a warning."""


@dataclass
class LabeledFiles:
    """Image files (absolute path strings: cheap to list, sort and hash) and their classes."""

    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ImageTree:
    """The files of an image dataset before decoding; `test` is None when the tree has none."""

    classes: list[str]
    train: LabeledFiles
    test: LabeledFiles | None
    skipped: list[SkippedFile]


def scan_class_folders(root: Path) -> ImageTree:
    """List a class-per-folder tree, using its `train/` and `val/` or `test/` sub-trees if any."""
    root = _existing_directory(root)
    train_root, test_root = root / "train", _first_directory(root, TEST_SPLIT_NAMES)
    skipped: list[SkippedFile] = []
    if train_root.is_dir() and test_root is not None:
        for unused in TEST_SPLIT_NAMES[1:]:
            if test_root.name != unused and (root / unused).is_dir():
                warnings.warn(
                    f"{root}: testing on {test_root.name}/ and leaving out {unused}/ "
                    f"(cnnlab trains on train/ and tests on one split)",
                    CnnlabWarning,
                    stacklevel=2,
                )
        classes = _class_names(train_root)
        unknown = sorted(set(_class_names(test_root)) - set(classes))
        if unknown:
            raise DataError(
                f"{test_root}: classes {unknown} have no folder in {train_root}; "
                "every test class needs training images"
            )
        train = _list_class_folders(train_root, classes, skipped, require_all=True)
        test = _list_class_folders(test_root, classes, skipped, require_all=False)
        return ImageTree(classes, train, test, skipped)
    tree_root = train_root if train_root.is_dir() else root
    classes = _class_names(tree_root)
    train = _list_class_folders(tree_root, classes, skipped, require_all=True)
    return ImageTree(classes, train, None, skipped)


def scan_prefix_labels(root: Path) -> ImageTree:
    """List a flat folder whose file names start with their label: `cat.12.jpg`, `dog.7.png`."""
    root = _existing_directory(root)
    image_root = root / "train" if (root / "train").is_dir() else root
    skipped: list[SkippedFile] = []
    named: list[tuple[str, str]] = []
    for path in _files_in(image_root, recursive=False):
        label, *rest = os.path.basename(path).split(".")
        if not _is_image(path, skipped):
            continue
        if len(rest) < 2 or not label:
            _skip(path, "no label prefix (expected <label>.<id>.<ext>)", skipped)
            continue
        named.append((path, label))
    if not named:
        raise DataError(
            f"{image_root}: no labelled images; expected files named <label>.<id>.<ext> "
            "such as cat.0.jpg"
        )
    classes = sorted({label for _, label in named})
    index = {name: i for i, name in enumerate(classes)}
    files = LabeledFiles([path for path, _ in named], [index[label] for _, label in named])
    return ImageTree(classes, files, None, skipped)


def _existing_directory(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: {problem}; give the folder that holds the images")
    return root.resolve()


def _first_directory(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _class_names(root: Path) -> list[str]:
    names = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not _hidden(entry.name)
    )
    if not names:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class>/<image files>")
    return names


def _list_class_folders(
    root: Path, classes: list[str], skipped: list[SkippedFile], *, require_all: bool
) -> LabeledFiles:
    """Image files under `root/<class>/` for each class; an empty class folder is an error."""
    files = LabeledFiles()
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir() and not require_all:
            continue  # a test split may lack a class
        images = [path for path in _files_in(folder, recursive=True) if _is_image(path, skipped)]
        if not images:
            raise DataError(f"{folder}: class folder has no images; add some or remove it")
        files.paths += images
        files.labels += [label] * len(images)
    return files


def _files_in(folder: Path, *, recursive: bool) -> list[str]:
    """Regular, non-hidden files in `folder` (and its sub-folders), as sorted path strings."""
    if not recursive:
        with os.scandir(folder) as entries:
            return sorted(e.path for e in entries if e.is_file() and not _hidden(e.name))
    found = []
    # The real folders from `folder` down to each folder being walked: a link back into one of
    # them is a loop, which os.walk would follow until the path grew too long.
    chains = {os.fspath(folder): (os.path.realpath(folder),)}
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        chain = chains.pop(directory)
        subdirectories[:] = [name for name in subdirectories if not _hidden(name)]
        for name in subdirectories:
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real in chain:
                raise DataError(
                    f"{path}: symbolic link loop (it leads back to {real}); remove the link"
                )
            chains[path] = (*chain, real)
        found += [os.path.join(directory, name) for name in names if not _hidden(name)]
    return sorted(found)


def _is_image(path: str, skipped: list[SkippedFile]) -> bool:
    suffix = os.path.splitext(path)[1]
    if suffix.lower() in IMAGE_SUFFIXES:
        return True
    _skip(path, f"not an image file (suffix '{suffix}')", skipped)
    return False


def _skip(path: str, reason: str, skipped: list[SkippedFile]) -> None:
    skipped.append(SkippedFile(path, reason))
    warn_skipped(skipped[-1])


def _hidden(name: str) -> bool:
    return name.startswith(".")
