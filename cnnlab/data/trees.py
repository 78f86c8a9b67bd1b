"""Image trees on disk: which files belong to a dataset, with which labels, in which split.

Two layouts are understood, neither of which opens an image:
  class folders   `ROOT/<class>/**/<image>` (torchvision's ImageFolder), or the same in split
                  folders: `ROOT/train/` plus `ROOT/test/` or `ROOT/val/` (`split_folders`);
  prefix labels   `ROOT/<label>.<id>.<ext>` (Kaggle's dogs-vs-cats), or the same in `ROOT/train/`.
Split folders are recognised by name, case-insensitively (`SPLIT_NAMES`: `Training/`,
`valid/`, `Test/`, ...). A tree whose top level mixes split folders with other folders, or names
one split twice (`val/` and `valid/`), is refused rather than guessed at.
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

SPLIT_NAMES = {
    "train": ("train", "training"),
    "test": ("test", "testing"),
    "val": ("val", "valid", "validation"),
}
"""Split folder names by role, matched case-insensitively. Beside `train/`, the test split is
`test/`, else `val/`; with both, `test/` is scored and `val/` is left out, with a warning."""


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
    root: Path  # the folder whose files make the training split (paths are relative to it)
    test_root: Path | None = None  # the folder of the test split, when the tree has one


def split_folders(root: Path) -> dict[str, Path]:
    """The split folders at the top of `root` by role (`train`, `test`, `val`); {} for none.

    Refuses, in one line, a role named by two folders and split folders beside other folders.
    """
    roles = {name: role for role, names in SPLIT_NAMES.items() for name in names}
    found: dict[str, list[Path]] = {}
    others = []
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if not entry.is_dir() or _hidden(entry.name):
            continue
        role = roles.get(entry.name.lower())
        if role is None:
            others.append(entry.name)
        else:
            found.setdefault(role, []).append(root / entry.name)
    if not found:
        return {}
    for role, folders in found.items():
        if len(folders) > 1:
            names = " and ".join(f"{folder.name}/" for folder in folders)
            raise DataError(f"{root}: both {names} name the {role} split; keep one of them")
    named = ", ".join(f"{folders[0].name}/" for folders in found.values())
    if others:
        shown = ", ".join(f"{name}/" for name in others[:5]) + (", ..." if len(others) > 5 else "")
        raise DataError(
            f"{root}: split folders ({named}) beside other folders ({shown}); put the class "
            "folders inside the split folders, or rename the split folders"
        )
    if "train" not in found:
        raise DataError(
            f"{root}: split folders ({named}) but no training split; add train/ (or training/)"
        )
    return {role: folders[0] for role, folders in found.items()}


def scan_class_folders(root: Path) -> ImageTree:
    """List a class-per-folder tree, using its train and test (or val) split folders if any."""
    root = _existing_directory(root)
    splits = split_folders(root)
    train_root = splits.get("train", root)
    test_root = splits.get("test", splits.get("val"))
    skipped: list[SkippedFile] = []
    classes = _class_names(train_root)
    train = _list_class_folders(train_root, classes, skipped, require_all=True)
    if test_root is None:
        return ImageTree(classes, train, None, skipped, train_root)
    if "test" in splits and "val" in splits:
        warnings.warn(
            f"{root}: testing on {test_root.name}/ and leaving out {splits['val'].name}/ "
            "(cnnlab trains on the training split and tests on one split)",
            CnnlabWarning,
            stacklevel=2,
        )
    unknown = sorted(set(_class_names(test_root)) - set(classes))
    if unknown:
        raise DataError(
            f"{test_root}: classes {unknown} have no folder in {train_root}; "
            "every test class needs training images"
        )
    test = _list_class_folders(test_root, classes, skipped, require_all=False)
    return ImageTree(classes, train, test, skipped, train_root, test_root)


def scan_prefix_labels(root: Path) -> ImageTree:
    """List a flat folder whose file names start with their label: `cat.12.jpg`, `dog.7.png`."""
    root = _existing_directory(root)
    image_root = _prefix_label_root(root)
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
    return ImageTree(classes, files, None, skipped, image_root)


def _prefix_label_root(root: Path) -> Path:
    """`root`'s training folder (`train/`, `Training/`, ...) if it has one, else `root`.

    Kaggle's archive also holds `test1/`, unlabelled, so other folders are not refused here.
    """
    names = {name.lower() for name in SPLIT_NAMES["train"]}
    folders = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name.lower() in names
    )
    if len(folders) > 1:
        raise DataError(
            f"{root}: both {' and '.join(f'{name}/' for name in folders)} name the train split; "
            "keep one of them"
        )
    return root / folders[0] if folders else root


def _existing_directory(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: {problem}; give the folder that holds the images")
    return root.resolve()


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
