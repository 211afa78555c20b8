"""Text outputs that survive a kill: whole JSON lines, atomic whole files.

* :class:`LineWriter`: appends lines (JSONL) with one ``pwrite`` system call
  per line, straight to the operating system (nothing waits in a buffer, so
  a kill loses no line that was written). A line is never torn by a kill:
  Linux copies a write into the file page by page and a fatal signal can
  stop it between two pages, so lines are laid out never to straddle a
  4 KiB page boundary (a line that would is preceded by padding spaces at
  the end of the previous line, which JSON readers ignore). On a failed
  write (disk full) the file is cut back to its last complete line.
* :func:`write_atomic`: writes a whole file (a summary, a report) to a
  temporary file beside it and renames it over the target, so readers see
  the old file or the new one, never half of one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with LineWriter(folder / "events.jsonl") as lines:
    ...     lines.write('{"index": 0}')
    >>> (folder / "events.jsonl").read_text()
    '{"index": 0}\\n'
    >>> write_atomic(folder / "summary.json", "{}\\n").read_text()
    '{}\\n'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# Lines never cross a multiple of this offset (the smallest page size Linux
# copies a write in; larger folios are multiples of it).
PAGE_BYTES = 4096


class LineWriter:
    """Append whole lines to a file; a kill or a full disk never leaves half a line.

    Args:
        path: The file (created or truncated).
        append: Keep what the file holds and add lines after it.

    Raises:
        OSError: The file cannot be opened (the caller names the fix).
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        self.path = Path(path)
        self.lines = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags | (0 if append else os.O_TRUNC), 0o644)
        # Offset just past the last complete line.
        self._end = os.fstat(self._fd).st_size if append else 0

    def write(self, line: str) -> None:
        """Append ``line`` (without its newline).

        Raises:
            OSError: The write failed (ENOSPC, EIO, EFBIG); the file then ends
                with the previous complete line.
        """
        data = line.encode("utf-8") + b"\n"
        start = self._end
        room = PAGE_BYTES - start % PAGE_BYTES
        if start and len(data) > room != PAGE_BYTES:
            # Pad the previous line with spaces up to the page boundary (its
            # newline moves to the page's last byte), so this line starts a page.
            start -= 1
            data = b" " * room + b"\n" + data
        try:
            self._pwrite_all(data, start)
        except OSError:
            self._restore()
            raise
        self._end = start + len(data)
        self.lines += 1

    def exists(self) -> bool:
        """Whether ``path`` still names this file (not deleted or replaced)."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _pwrite_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            if written == 0:
                raise OSError("write returned 0 bytes")
            view, offset = view[written:], offset + written

    def _restore(self) -> None:
        """Cut the file back to its last complete line (after a failed write)."""
        if self._end:  # the padding may have replaced its newline (no new space)
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, b"\n", self._end - 1)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._end)


def write_atomic(path: str | Path, text: str | bytes, *, sync: bool = True) -> Path:
    """Write ``text`` (str: UTF-8) to ``path`` so that it is never seen half-written.

    The text goes to a temporary file in the same folder, is flushed to disk
    (``sync``; without it a kill is covered, a power cut is not), and replaces
    ``path`` in one rename.

    Returns:
        ``path``.

    Raises:
        OSError: The folder is not writable or the disk is full (``path`` is
            then unchanged and no temporary file is left).
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(text.encode("utf-8") if isinstance(text, str) else text)
            file.flush()
            if sync:
                os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
