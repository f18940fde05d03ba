"""Files that appear complete or not at all: `atomic_write`.

Every file or directory keras_vit and its binaries write (`.npz` checkpoints, `.keras` models,
`config.json` and `metrics.json`, SavedModel directories, downloaded weights) goes through
`atomic_write`: the writer fills a temporary path beside the target, and only a complete result
is renamed onto the target. A process killed mid-write leaves the previous version (or nothing)
under the target's name, never a half-written file that a later run would trust.

What such a kill does leave is the temporary itself, `.NAME.PID.tmp[.SUFFIX]`, hidden beside
the target; `remove_stale_temporaries(directory)` deletes those whose process no longer runs.
"""

import contextlib
import os
import re
import shutil
import time

# atomic_write's temporaries: ".STEM.PID.tmp" plus the target's suffix, if any.
_TEMPORARY = re.compile(r"\.(?P<stem>[^.]+)\.(?P<pid>\d+)\.tmp(\..*)?")


@contextlib.contextmanager
def atomic_write(path, *, directory=False):
    """Yields a temporary path to write; on success it replaces `path`.

    The temporary path lies in `path`'s directory (created if needed), so the final rename is
    atomic on one file system, and ends with `path`'s full suffix (`.weights.h5`, `.keras`,
    ...), so writers that check the suffix accept it. When the block raises, the temporary is
    removed and `path` is left as it was.

    A directory (`directory=True`, e.g. a SavedModel) cannot be swapped in one rename when an
    older version exists: the old one is renamed to `PATH.old` first, so a kill leaves the old
    version, the new one, or `PATH.old` beside nothing; never a partial directory at `path`.

    Args:
        path: str or path-like. The file or directory to write.
        directory: bool. Whether the writer makes a directory. Defaults to False.

    Yields:
        str: the temporary path to write to (it does not exist yet).

    Example:

    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> with atomic_write(path) as temporary:
    ...     with open(temporary, "w") as f:
    ...         _ = f.write("{}")
    >>> open(path).read(), sorted(os.listdir(os.path.dirname(path)))
    ('{}', ['metrics.json'])
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    stem, dot, suffix = name.partition(".")
    # ".NAME.PID.tmp.SUFFIX": hidden, unique per process, same suffix as the target.
    temporary = os.path.join(
        parent, f".{stem}.{os.getpid()}.tmp" + (f".{suffix}" if dot else "")
    )
    _remove(temporary)
    try:
        yield temporary
        if directory:
            _replace_directory(temporary, path)
        else:
            os.replace(temporary, path)
    finally:
        _remove(temporary)


def _replace_directory(source, target):
    previous = target + ".old"
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(target):
        os.rename(target, previous)
    os.rename(source, target)
    shutil.rmtree(previous, ignore_errors=True)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def remove_stale_temporaries(directory, *, older_than=0.0):
    """Removes `atomic_write` temporaries in `directory` whose writing process is gone.

    SIGKILL (or a power cut) skips `atomic_write`'s clean-up; such a temporary is never trusted
    (only a rename gives it the target's name), so removing it only frees the disk. A process is
    looked up by its pid on this machine: in a directory that processes of several machines
    write (a download cache in a shared home), pass `older_than` so that another machine's
    temporary, still being written, is kept.

    Args:
        directory: str or path-like. The directory to clean; a missing one is left alone.
        older_than: float. Seconds since a temporary was last modified before it may be
            removed. Defaults to 0.

    Returns:
        list of str: the paths removed.
    """
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in sorted(names):
        match = _TEMPORARY.fullmatch(name)
        if match and not _alive(int(match.group("pid"))):
            path = os.path.join(directory, name)
            try:
                age = time.time() - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if age >= older_than:
                _remove(path)
                removed.append(path)
    return removed


def _alive(pid):
    if pid == os.getpid():
        return False  # this process is not writing it: atomic_write removes its own first
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True
