"""One run per workdir: `WorkdirLock`, an OS lock held from the first check to the last write.

Two runs on one workdir would resume from each other's checkpoints and overwrite each other's
`model.keras` and `metrics.json`, the last writer's result hiding the other's. The chief (the only
task that writes the workdir) takes an exclusive `fcntl.flock` on `WORKDIR/.lock` before it reads
a checkpoint, and holds it until the run ends. A second run finds it held and stops at once with
`WorkdirBusyError`, whose message names the holder (pid, host, start time, written into the file).

The lock belongs to the open file, so the operating system releases it however the holder ends,
SIGKILL and a lost machine included (on network file systems, through their lock protocol: NFSv4
and Lustre support `flock`; where a file system has none, the run goes on unlocked and says so).
The file stays (unlocked) when the run ends, however it ends: removing a lock file races with a
run that has just opened it. It is removed only with a workdir that the refused run created
and left otherwise empty.
"""

import contextlib
import datetime
import errno
import fcntl
import os
import socket

from absl import logging

LOCK_NAME = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock; the message names it."""


class WorkdirLock:
    """Context manager: an exclusive lock on `workdir` for one run; raises if another holds it.

    Creates `workdir` if needed; on exit unlocks the lock file, and removes it and the workdir
    when this lock created the workdir and nothing else was written into it (a run refused
    before its first write leaves no trace).

    Args:
        workdir: str. The run's directory.

    Raises:
        WorkdirBusyError: (on entry) another process holds the lock.
        ValueError: (on entry) the workdir or its lock file cannot be created.
    """

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_NAME)
        self._file = None
        self._created_workdir = False

    def __enter__(self):
        for _ in range(10):
            try:
                if not os.path.isdir(self.workdir):
                    os.makedirs(self.workdir, exist_ok=True)
                    self._created_workdir = True
                f = open(self.path, "a+")
            except FileNotFoundError:  # the workdir was removed meanwhile (another run's exit)
                continue
            except OSError as exc:
                # Before the data and the model are set up: one line, not a traceback later.
                raise ValueError(
                    f"workdir {self.workdir!r} cannot be written ({exc.strerror or exc}: "
                    f"{exc.filename}); use a --workdir this process can write") from None
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    f.seek(0)
                    holder = f.read().strip()
                    f.close()
                    self._remove_workdir_if_empty()
                    raise WorkdirBusyError(busy_message(self.workdir, self.path, holder)) from None
                # ENOLCK, EOPNOTSUPP: a file system without locks.
                logging.warning("workdir %s: its file system has no locks (%s); nothing stops "
                                "a second run from using it at the same time", self.workdir, exc)
                f.close()
                return self
            # The file is removed with a workdir that a refused run created: a lock on a file
            # that is no longer at the path locks nothing, so open the path again.
            try:
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(holder_description() + "\n")
            f.flush()
            self._file = f
            return self
        raise WorkdirBusyError(f"workdir {self.workdir!r}: could not take its lock {self.path} "
                               "(other runs keep replacing it)")

    def __exit__(self, *exc_info):
        if self._file is None:
            return
        if self._created_workdir and os.listdir(self.workdir) == [LOCK_NAME]:
            # Removed while still locked, so that a run that opened it meanwhile sees it gone.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self._file.close()
        self._file = None
        self._remove_workdir_if_empty()

    def _remove_workdir_if_empty(self):
        if self._created_workdir:
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                os.rmdir(self.workdir)


def holder_description():
    """What the lock file says about this process: its pid, host and start time (UTC)."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"pid {os.getpid()} on host {socket.gethostname()}, started {started}"


def busy_message(workdir, path, holder):
    """The message of `WorkdirBusyError`."""
    who = holder or "a process that has not written its name yet"
    return (f"workdir {workdir!r} is in use by another training run ({who}; lock {path}); "
            "wait for it to end and rerun, or use another --workdir")
