"""Writing files so that a kill or a full disk never leaves a torn one: :func:`atomic_write`.

Every file neurofm writes for a user (shards, manifests, checkpoints, exports, embeddings,
metrics, figures) goes through :func:`atomic_write`: the content goes to a temp file beside
the target, which is fsynced and renamed onto the target only once it is whole. On any error
the temp file is removed and the previous target, if any, is left as it was. A full disk
(``ENOSPC``/``EDQUOT``, or a writer such as torch's zip writer that reports it in its own
words) becomes one :class:`~neurofm.errors.DiskFullError` naming the file and the space it needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from neurofm.errors import DiskFullError

# free space below which a failed write is taken as a full disk, whatever the writer said
_FULL_BELOW_BYTES = 256 * 1024
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_disk_full(err: BaseException, path: str | os.PathLike) -> bool:
    """Whether ``err``, raised while writing ``path``, means that its filesystem is full: an
    ``ENOSPC``/``EDQUOT`` anywhere in its chain, a writer's own words for it (safetensors:
    "os error 28"), or any error while next to nothing is free (torch's zip writer says
    "unexpected pos")."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, Exception):
        with contextlib.suppress(OSError):
            return free_bytes(path) < _FULL_BELOW_BYTES
    return False


def disk_full_error(path: str | os.PathLike, needed_bytes: int, what: str = "file") -> DiskFullError:
    """The one-line error for a ``what`` at ``path`` that did not fit."""
    free = free_bytes(path)
    return DiskFullError(
        f"disk full: the {what} needs about {_megabytes(needed_bytes)} and "
        f"{_megabytes(free)} is free on {Path(path).absolute().parent}; nothing was left "
        f"behind and any earlier {Path(path).name} is intact: free space (or choose another "
        "folder) and run again", path, needed_bytes=needed_bytes, free_bytes=free)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, what: str = "file", fsync: bool = True,
                 expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; rename it onto ``path`` when the block ends.

    Parameters
    ----------
    path : str | os.PathLike
        The file to write. Its folder is created if needed.
    what : str
        What the file is ("checkpoint", "export"), for the error message.
    fsync : bool
        Flush the temp file to disk before the rename (a crash then leaves the old or the new
        file, never an empty one).
    expected_bytes : int | None
        What the file will take, if known, for the message on a full disk; default: what was
        written before the disk filled, or the size of the file it replaces, whichever is larger.

    Raises
    ------
    DiskFullError
        The filesystem filled up; the temp file is removed, ``path`` is as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # hidden and named after the process: concurrent writers never share one, `ls` hides it
    # suffix kept last: np.save and savefig choose the format from it
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        full = is_disk_full(err, tmp)
        tmp.unlink(missing_ok=True)
        if not full:
            raise
        previous = path.stat().st_size if path.exists() else 0
        raise disk_full_error(path, expected_bytes or max(written, previous), what) from err


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_write`; return ``path``."""
    with atomic_write(path, what) as tmp:
        tmp.write_text(text)
    return Path(path)
