"""One run per folder: claiming a run folder for training, and the lock held while it trains.

A folder holds a run when it has any of the files a run (or `cnnlab eval` of it) writes. A new
run into such a folder is refused unless it is forced, which removes the old run's files first;
resuming continues the run that is there. While a run trains, its process holds an exclusive
`flock` on `<run>/.lock`, so a second process that would write into the same folder is refused
at once instead of mixing its checkpoints with the first one's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cnnlab.errors import CheckpointError, OptionError
from cnnlab.fileio import writable_directory

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder check still applies
    fcntl = None

RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "metrics.csv",
    "curves.png",
    "last.pt",
    "best.pt",
    "eval.json",
    "confusion.png",
    "transfer.yaml",
)
"""What a run leaves in its folder; `force` removes exactly these."""
EVALUATION_FILES = ("eval.json", "confusion.png")
"""What `cnnlab eval` writes beside a checkpoint: stale once the run trains on."""
LOCK_FILE = ".lock"


def clear_evaluation(folder: Path) -> None:
    """Remove `folder`'s `EVALUATION_FILES`, which describe checkpoints being replaced."""
    for name in EVALUATION_FILES:
        (folder / name).unlink(missing_ok=True)


def run_files(folder: Path) -> list[str]:
    """The names of `RUN_FILES` present in `folder`."""
    return [name for name in RUN_FILES if (folder / name).is_file()]


@contextlib.contextmanager
def claim_run_folder(
    folder: str | Path, *, resume: bool = False, force: bool = False
) -> Iterator[Path]:
    """Hold `folder` for one training run: created, locked and free of any other run's files.

    A new run refuses a folder that holds a run unless `force`, which deletes its run files;
    `resume` keeps them (the checkpoint is checked when it is loaded). The lock is released
    when the block ends, however it ends.
    """
    folder = Path(folder)
    if resume and force:
        raise OptionError("--resume continues a run and --force replaces it; give only one")
    if resume and not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint to resume (no such folder)")
    writable_directory(folder, "choose another --out")
    with _exclusive_lock(folder):
        existing = run_files(folder)
        if existing and force:
            for name in existing:
                (folder / name).unlink(missing_ok=True)
        elif existing and not resume:
            raise OptionError(_occupied_message(folder, existing))
        yield folder


def _occupied_message(folder: Path, existing: list[str]) -> str:
    if "last.pt" in existing:
        choices = f"continue it with --resume {folder}, replace it with --force"
        return f"{folder} already holds a run; {choices}, or choose another --out"
    return (
        f"{folder} holds an unfinished run with no checkpoint ({', '.join(existing)}); "
        "replace it with --force, or choose another --out"
    )


@contextlib.contextmanager
def _exclusive_lock(folder: Path) -> Iterator[None]:
    """`flock` on `folder/.lock`, taken without waiting: a second holder gets one clear line."""
    if fcntl is None:
        yield
        return
    with open(folder / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OptionError(
                f"{folder} is in use by another training run (it holds {folder / LOCK_FILE}); "
                "wait for it to finish or choose another --out"
            ) from None
        yield  # closing the file releases the lock
