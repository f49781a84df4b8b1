"""Private files and directories: the database, its -wal/-shm, stamp files, the audit log.

The SQLite database holds SCRAM keys and every archived and offline message;
the audit log names who logged in from where.  So whatever the umask:

* directories xmppd creates for them are :data:`PRIVATE_DIR_MODE` (0700);
* files xmppd creates are :data:`PRIVATE_FILE_MODE` (0600), set with
  ``fchmod`` on the descriptor (the umask can only remove bits from the mode
  given to ``open``/``mkdir``; ``fchmod`` makes the result exact);
* SQLite creates ``-wal``, ``-shm`` and ``-journal`` with the mode of the
  database file, so a 0600 database gives 0600 companions;
* an *existing* file or directory that other users can read is not changed
  behind the operator's back (a group may be deliberate): :func:`warn_if_open`
  logs one warning naming the path and the ``chmod`` that fixes it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_dir", "private_file", "open_private",
           "warn_if_open", "check_database_files"]

log = logging.getLogger("xmppd.storage.files")

#: mode of the data directories xmppd creates (database, audit log, stamp files)
PRIVATE_DIR_MODE = 0o700
#: mode of the database, its -wal/-shm, the stamp files and the audit log
PRIVATE_FILE_MODE = 0o600
#: files SQLite keeps next to a database
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
#: (path, inode, mode) already warned about in this process: one line per problem, not one per
#: caller (the data directory is the database's directory and the audit log's); bounded
_WARNED: set[tuple[str, int, int]] = set()
_WARNED_MAX = 1024


def private_dir(path: os.PathLike | str) -> Path:
    """Create ``path`` and missing parents as 0700 (exact, whatever the umask); an
    existing directory is left as it is but warned about when others can read it."""
    path = Path(path).expanduser()
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: judged below like any existing one
        os.chmod(d, PRIVATE_DIR_MODE)
    if path not in missing:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        warn_if_open(path)
    return path


def open_private(path: os.PathLike | str, flags: int) -> int:
    """``os.open`` creating the file 0600 (exact); an existing file keeps its mode (and is warned
    about by :func:`warn_if_open` when more open)."""
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_size == 0 and stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE and st.st_uid == os.geteuid():
            # an empty file we just created (or an empty leftover): make the mode exact
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: os.PathLike | str) -> Path:
    """Make sure ``path`` exists; created 0600, an existing one is only checked."""
    path = Path(path).expanduser()
    existed = path.exists()
    os.close(open_private(path, os.O_RDWR))
    if existed:
        warn_if_open(path)
    return path


def warn_if_open(path: os.PathLike | str) -> bool:
    """Log a warning (naming the path and the fix) when group or others have any access to
    ``path``; True if it warned.  World-writable sticky directories (``/tmp``) are not judged."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return False
    key = (os.path.abspath(path), st.st_ino, mode)
    if key in _WARNED:
        return True
    if len(_WARNED) >= _WARNED_MAX:
        _WARNED.clear()
    _WARNED.add(key)
    if stat.S_ISDIR(st.st_mode):
        if mode & stat.S_ISVTX:
            return False  # a shared temp directory: the files in it are what matters
        log.warning("data directory %s is accessible by other users (mode %04o): it holds the "
                    "database and the audit log; fix: chmod %o %s", path, mode, PRIVATE_DIR_MODE, path)
    else:
        log.warning("%s is readable by other users (mode %04o): it holds account keys and messages; "
                    "fix: chmod %o %s", path, mode, PRIVATE_FILE_MODE, path)
    return True


def check_database_files(database: os.PathLike | str) -> None:
    """Warn about a SQLite database, its companions and its stamp files that others can read."""
    base = str(Path(database).expanduser())
    warn_if_open(base)
    for suffix in SQLITE_COMPANIONS:
        warn_if_open(base + suffix)
    parent = Path(base).parent
    for stamp in parent.glob(Path(base).name + "-*-changed"):
        warn_if_open(stamp)
