"""One atomic file write, for every file the box keeps (the board, the LV2 scan cache).

A power cut during :func:`write_atomic` leaves either the old file or the new
one, never half of one: the text goes to a temporary file in the same folder,
which is fsynced, renamed over the target, and the folder is fsynced so that
the rename itself is on the card. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, text: str, backup: Path | None = None) -> None:
    """Replace ``path`` with ``text`` atomically.

    Args:
        path: the file to write; its folder is made if missing.
        text: the whole new content (UTF-8).
        backup: if given and ``path`` exists, the old file is kept there (a
            hard link made before the rename, so it is the last good copy).

    Raises:
        OSError: the folder is not writable, the disk is full. The temporary
            file is removed and ``path`` is left as it was.
    """
    folder = path.parent
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None and path.exists():
            link = backup.with_name(f".{backup.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(path, link)
            os.replace(link, backup)
        os.replace(tmp, path)
        fsync_folder(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale_temporaries(path: Path) -> list[Path]:
    """Temporary files :func:`write_atomic` left for ``path`` when it was cut short."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))
