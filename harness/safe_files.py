"""Files aebench writes into a folder it was given, never through a link planted there.

A results folder may be shared (``--results`` on a shared path), and a bundle may come from
anyone, so another user can plant a symbolic link where aebench writes (``campaign.lock ->
~/victim``) or reads what it sends elsewhere (an artifact ``-> /etc/passwd``). Every file
aebench writes in such a folder goes through this module:

- a whole file (a record, a table, run.json) is written to a temporary file made exclusively
  beside it (``os.open`` with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0o644, a fresh random name) and
  renamed over it (``replacing``, ``write_bytes``, ``write_text``, ``copy_file``);
- a file kept open (a lock, an appended table, a log) is opened with O_NOFOLLOW and never
  truncated unless it is a regular file with no other name (``open_own``, ``fresh_file``);
- a folder aebench writes in is refused when it is a link (``own_folder``);
- a file aebench copies or uploads is opened with O_NOFOLLOW and must be a regular file
  (``open_regular``).

A link where aebench expects its own file or folder is one error line naming it
(AebenchError, exit 2); it is never followed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Optional

from aebench.errors import AebenchError

FILE_MODE = 0o644
TEMPORARY_TRIES = 16  # fresh random names tried before a temporary file is given up
NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
CONTROL_CHARACTERS = frozenset(chr(c) for c in [*range(32), 127])
MAX_READ_BYTES = 64 << 20  # a file aebench reads back (a record, run.json, a cache) is far smaller


def link_refused(path: Path) -> AebenchError:
    """The one line for a link found where aebench keeps its own file or folder."""
    return AebenchError(
        f"{path}: is a symbolic link where aebench keeps its own file or folder; aebench does not "
        "follow links in the folders it writes or sends (remove the link)"
    )


def refuse_link(path: Path) -> None:
    """AebenchError naming ``path`` when it is a symbolic link (a missing path is fine)."""
    if Path(path).is_symlink():
        raise link_refused(Path(path))


def refuse_links(folder: Path, names: Iterable[str]) -> None:
    """refuse_link for each of ``names`` in ``folder``."""
    for name in names:
        refuse_link(Path(folder) / name)


def is_name(value: object) -> bool:
    """Whether ``value`` may be one component of a path aebench makes: a non-empty string of at
    most 200 characters, not '.' or '..', without a separator or a control character."""
    if not isinstance(value, str) or not 0 < len(value) <= 200 or value in (".", ".."):
        return False
    return not ("/" in value or "\\" in value or CONTROL_CHARACTERS.intersection(value))


def own_folder(path: Path) -> Path:
    """``path`` as a folder aebench may write in, made (with its missing parents) where it is
    missing; AebenchError when it is a link or something other than a folder."""
    path = Path(path)
    refuse_link(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AebenchError(f"{path}: is not a folder; aebench keeps a folder of its own here") from None
    except OSError as exc:  # a file above it, no permission, a read-only place
        raise AebenchError(f"{path}: cannot make this folder ({exc.strerror or exc})") from None
    refuse_link(path)  # made a link between the look and the mkdir
    return path


def own_folders(root: Path, relative: Path) -> Path:
    """``root / relative``, each folder below ``root`` made or checked by own_folder (``root``
    itself is the folder aebench was given, which may be a link of the user's choosing)."""
    path = Path(root)
    for part in Path(relative).parts:
        path = own_folder(path / part)
    return path


def _open(path: Path, flags: int) -> int:
    """os.open without following a link at ``path``; a link is AebenchError naming it."""
    try:
        return os.open(path, flags | NO_FOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: the BSDs' answer to O_NOFOLLOW on a link
            raise link_refused(Path(path)) from None
        raise


def _check_own(fd: int, path: Path, single: bool) -> int:
    """``fd`` when it is a regular file (with no other name, when ``single``); else closes it and
    raises AebenchError naming ``path``."""
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and (info.st_nlink == 1 or not single):
        return fd
    os.close(fd)
    what = "a regular file" if not stat.S_ISREG(info.st_mode) else f"a file of its own (it has {info.st_nlink} names)"
    raise AebenchError(f"{path}: is not {what}; aebench does not write through it (remove it)")


def open_own(path: Path, flags: int) -> int:
    """A descriptor on aebench's own file ``path`` (made when missing and ``flags`` has
    O_CREAT), opened without following a link and never truncated: a lock (O_RDWR|O_CREAT) or
    an appended table (O_WRONLY|O_APPEND|O_CREAT). AebenchError when it is a link, not a
    regular file (a FIFO is refused without waiting for a reader), or has another name (a hard
    link would carry aebench's writes elsewhere)."""
    try:
        fd = _open(path, (flags & ~os.O_TRUNC) | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: a FIFO no process reads, opened for writing only
            raise
        raise AebenchError(f"{path}: is not a regular file; aebench does not write through it (remove it)") from None
    fd = _check_own(fd, Path(path), single=True)
    os.set_blocking(fd, True)
    return fd


def fresh_file(path: Path) -> int:
    """A descriptor on a new, empty file at ``path`` (a log): an earlier regular file there is
    removed first, then the file is made exclusively. AebenchError when ``path`` is a link."""
    path = Path(path)
    refuse_link(path)
    path.unlink(missing_ok=True)
    try:
        return _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        raise AebenchError(f"{path}: appeared while aebench made it; aebench writes only files it made") from None


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading without following a link; AebenchError when it is a link or
    not a regular file (a FIFO is opened without waiting, then refused)."""
    fd = _check_own(_open(path, os.O_RDONLY | os.O_NONBLOCK), Path(path), single=False)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(path: Path, limit: int = MAX_READ_BYTES) -> str:
    """The text of the regular file ``path`` (undecodable bytes replaced), never through a link;
    AebenchError when it holds more than ``limit`` bytes (nothing aebench writes comes near)."""
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise AebenchError(f"{path}: larger than {limit / 2**20:g} MiB; not a file aebench wrote")
    return data.decode(errors="replace")


def read_json(path: Path, limit: int = MAX_READ_BYTES) -> Any:
    """The JSON value of the regular file ``path`` (read as read_text); ValueError when it is not
    JSON or is nested too deeply to parse."""
    return parse_json(read_text(path, limit), path)


def parse_json(text: str, source: Path) -> Any:
    """json.loads, with a value nested too deeply for the parser a ValueError naming ``source``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply") from None


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file beside ``path`` under a fresh hidden name, made exclusively (never an existing
    file or link): its descriptor and path."""
    for _ in range(TEMPORARY_TRIES):
        tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
        try:
            return _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), tmp
        except FileExistsError:
            continue
    raise AebenchError(f"{path.parent}: no fresh temporary name for {path.name} after {TEMPORARY_TRIES} tries")


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file, written in the block, that replaces ``path`` when the block ends without an
    error (removed otherwise). AebenchError when ``path`` is a link."""
    path = Path(path)
    refuse_link(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """``path`` holding ``data``, written atomically (see replacing)."""
    with replacing(path) as handle:
        handle.write(data)


def write_text(path: Path, text: str) -> None:
    """``path`` holding ``text`` in UTF-8, written atomically (see replacing)."""
    write_bytes(path, text.encode())


def copy_file(source: Path, target: Path) -> str:
    """Copy the regular file ``source`` (never through a link) to ``target`` atomically; the
    sha256 of the bytes copied."""
    with open_regular(source) as reader, replacing(target) as writer:
        return _stream(reader, writer)


def regular_sha256(path: Path) -> str:
    """sha256 of the regular file ``path``, read without following a link."""
    with open_regular(path) as reader:
        return _stream(reader)


def _stream(reader: BinaryIO, writer: Optional[BinaryIO] = None) -> str:
    """Read ``reader`` to its end in 1 MiB blocks (each written to ``writer``, if any); their sha256."""
    digest = hashlib.sha256()
    for block in iter(lambda: reader.read(1 << 20), b""):
        digest.update(block)
        if writer is not None:
            writer.write(block)
    return digest.hexdigest()
