"""Reading what an agent left behind without trusting it.

Everything in a sandbox (its worktree, git dir, refs, object directory) is hostile
input: a "file" may be a symlink to a host file, a FIFO that blocks the reader forever,
a device, or a gigabyte where a line was expected.  These helpers read and tidy such
places without following links and without ever blocking on a special file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import unicodedata
from pathlib import Path

_SHA = re.compile(rb"[0-9a-f]{40}")
# Terminal escape sequences: CSI (colours, cursor), OSC (title, clipboard, links: ended
# by BEL or ST), DCS/SOS/PM/APC strings, and two-character ones; their 8-bit forms too.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]")


class HostileFileError(OSError):
    """What was found is not a small regular file (a link, a FIFO, a device, too big)."""


def read_regular(path: str | os.PathLike[str], limit: int = 4096) -> bytes | None:
    """The bytes of the regular file at ``path`` (never through a symlink, never
    blocking on a FIFO); None when nothing is there.  :class:`HostileFileError` for
    anything else or for more than ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                     | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink; ENXIO: a FIFO's other end; ...
        raise HostileFileError(f"{path}: not a regular file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostileFileError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise HostileFileError(f"{path}: {st.st_size} bytes, more than {limit}")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise HostileFileError(f"{path}: more than {limit} bytes")
        return data
    finally:
        os.close(fd)


def read_sha(path: str | os.PathLike[str]) -> str | None:
    """A loose ref file's object name, read as data: exactly 40 lowercase hex digits and
    an optional newline.  None when there is no file; :class:`HostileFileError` for a
    symbolic ref, a link, a special file or anything else."""
    data = read_regular(path, 128)
    if data is None:
        return None
    body = data[:-1] if data.endswith(b"\n") else data
    if not _SHA.fullmatch(body):
        raise HostileFileError(f"{path}: not an object name ({data[:60]!r})")
    return body.decode()


def is_sha(text: str) -> bool:
    """Whether ``text`` is a full object name (40 lowercase hex digits)."""
    return bool(_SHA.fullmatch(text.encode("ascii", "replace")))


def scrub_special(root: str | os.PathLike[str], max_entries: int = 1_000_000) -> int:
    """Remove everything under ``root`` that is neither a regular file nor a real
    directory (symlinks, FIFOs, sockets, devices), never following links; how many were
    removed.  For a directory an agent wrote, before a reader (git) walks it.  A root
    that is itself such a thing is removed; more than ``max_entries`` entries:
    :class:`HostileFileError` (nothing reasonable holds that many)."""
    root = Path(root)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode):
            return 0
        os.unlink(root)
        return 1
    removed, seen, stack = 0, 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                seen += 1
                if seen > max_entries:
                    raise HostileFileError(f"{root}: more than {max_entries} entries")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif not entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def write_file_nofollow(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file renamed over it):
    whatever was there, a link or a FIFO included, is replaced, never written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.forkyard-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)



def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character removed (C0 and C1 controls, DEL, and
    format characters such as bidirectional overrides), tabs and newlines made spaces
    (kept as they are with ``keep_lines``: a log for a JUnit file or a Markdown block):
    what an agent wrote, safe to show on a terminal (no escape sequence reaches it: no
    OSC 52 clipboard write, no cursor games, no title change)."""
    if text.isprintable():
        return text
    text = _ESCAPES.sub("", text)  # whole sequences, not only their ESC
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(ch if keep_lines else " ")
        elif unicodedata.category(ch) == "Zs":
            out.append(" ")  # exotic spaces are fine; isprintable() calls them not
    return "".join(out)
