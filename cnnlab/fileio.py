"""Atomic file writes: a crash or a failed write never leaves a half-written file behind.

Writes go to a temporary file in the destination folder that is flushed, fsynced and then
renamed over the target (`os.replace` is atomic on POSIX and Windows). Checkpoints, metrics,
plots and reports all go through here, so none of them can be lost to an interrupted write.
`writable_directory` creates the folder a command writes into, or says in one line why not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import OptionError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`.

    If the body raises, the temporary file is removed and `path` keeps its old contents.
    """
    path = Path(path)
    writable_directory(path.parent)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp's 0600 -> the user's usual mode
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: fsync the folder entry (POSIX only; Windows has no such call)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_write(path, "w") as file:
        file.write(text)


def writable_directory(path: str | Path, fix: str = "choose another folder") -> Path:
    """`path` as a folder that exists and can be written to (created with its parents).

    A path that cannot be created or written (under `/proc`, an existing file, no permission)
    raises `OptionError` naming the folder, the reason and `fix`.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OptionError(f"cannot write into {path}: it is a file, not a folder; {fix}") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OptionError(f"cannot create the folder {path} ({reason}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OptionError(f"cannot write into {path} (permission denied); {fix}")
    return path
