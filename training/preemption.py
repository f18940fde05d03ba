"""Preemption and faults of a training run: SIGTERM/SIGINT save and stop; lost workers named.

Preemptible machines (Kubernetes, Slurm, spot VMs, TPU maintenance) send SIGTERM, wait a grace
period, then SIGKILL. The training binary turns the SIGTERM into a clean stop:

1. `StopRequest` catches SIGTERM and SIGINT (in the main thread; Python runs the handler between
   two steps, so the step in flight always finishes) and only records that a stop was asked.
2. Every worker feeds its request into its next training step, whose all-reduce sums the
   requests of all workers (`training/steps.py`): every worker learns at the same step that one of
   them was asked to stop, so all stop after that step. One process needs no agreement and stops
   right after the step in flight. Outside steps (before the first, after the last) the workers
   agree with `agree(...)`, one small all-reduce.
3. Every worker saves the checkpoint of that step (the chief into the workdir, atomically as
   always: `training/checkpointing.py`), and `train_and_evaluate` raises `Preempted`; the binary
   exits with `EXIT_PREEMPTED`. Rerunning the same command resumes from exactly that step.
   Further signals while stopping are logged and ignored: nothing interrupts the save, and a
   SIGKILL in the middle of it leaves the previous complete checkpoint (the atomic save).

A worker that disappears (SIGKILL, a lost machine) makes the survivors' collective operations
fail; `explain_lost_workers` turns that failure into `WorkerLostError`, naming the tasks that no
longer answer on their `TF_CONFIG` address and the step a rerun resumes from; the binary exits
with `EXIT_WORKER_LOST`.

Exit codes of `python -m training.train` (the README's "Preemption and faults"):

| code | meaning                                              | a scheduler should           |
|------|------------------------------------------------------|------------------------------|
| 0    | the run completed: metrics.json, model.keras written | stop                         |
| 1    | bad settings or data, a NaN loss, any other error    | not retry; show the message  |
| 75   | stopped by SIGTERM/SIGINT after saving its step      | rerun the same command       |
|      | (or before the run started: nothing written), or     |                              |
|      | the workdir is in use by another run                 |                              |
| 69   | a worker of the cluster disappeared                  | rerun the whole cluster      |

From the first line of `python -m training.train` to the last, a SIGTERM or SIGINT gives 75,
or 0 once the final outputs are being written (the run then completes: metrics.json is written
and the process exits 0, immune to further signals). During the final evaluation it gives 75:
the rerun resumes at the last step, which is saved, and evaluates again.

75 is sysexits' EX_TEMPFAIL ("temporary failure; the user is invited to retry") and 69 its
EX_UNAVAILABLE. Not 143 (128 + SIGTERM): that is what a shell reports for a process that SIGTERM
killed without saving anything, and a scheduler must be able to tell the two apart.
"""

import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging

EXIT_PREEMPTED = 75
EXIT_WORKER_LOST = 69

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# The errors a collective operation or a remote call raises when its peer is gone: the
# connection reset or refused (Unavailable), the coordination service's missed heartbeats
# (Unavailable, DeadlineExceeded), a collective cancelled because another one failed
# (Cancelled, Aborted). Reported as a lost worker even when no task can be named.
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
)
# Errors that are a lost worker only when one can be named (an unreachable address, a task
# the message names); otherwise they are bugs or bad data, and pass through unchanged.
_MAYBE_PEER_ERRORS = (tf.errors.InternalError, tf.errors.FailedPreconditionError)
# How long a peer's address is tried before it counts as gone.
_PROBE_TIMEOUT_S = 2.0


class Preempted(Exception):
    """A SIGTERM or SIGINT stopped the run after its checkpoint at `step` was saved.

    Attributes:
        step: int. The step saved; a rerun resumes from it.
        signal_name: str. "SIGTERM" or "SIGINT".
    """

    def __init__(self, message, *, step, signal_name):
        super().__init__(message)
        self.step = step
        self.signal_name = signal_name


class WorkerLostError(RuntimeError):
    """A worker of the cluster disappeared; the message names it and the step to resume from."""


class StopRequest:
    """Context manager that turns SIGTERM and SIGINT into a request to stop at a safe point.

    Handlers are installed on entry (only in the main thread, the one Python delivers signals
    to; elsewhere the request can only be set by `request`) and the previous ones restored on
    exit, unless `restore=False`: the binary keeps them until the process ends, so that a
    second SIGTERM during its exit cannot turn the exit code into a death by signal.

    Args:
        signals: the signals to catch. Defaults to SIGTERM and SIGINT.
        restore: bool. Restore the previous handlers on exit. Defaults to True.

    Example:

    >>> with StopRequest() as stop:
    ...     stop.requested
    False
    """

    def __init__(self, signals=SIGNALS, *, restore=True):
        self._signals = tuple(signals)
        self._restore = restore
        self._previous = {}
        self.signal_name = None
        self.requested_at = None
        self._finishing = False

    @property
    def requested(self):
        """bool: a signal arrived (or `request` was called)."""
        return self.signal_name is not None

    def finishing(self):
        """From now on the run only writes its final outputs, then completes: a signal is
        logged as such and changes nothing (the exit code is 0)."""
        self._finishing = True

    def request(self, signal_name="SIGTERM"):
        """Records a stop request, as the signal `signal_name` would."""
        if self._finishing:
            logging.warning("%s received while the final outputs are written: they are "
                            "finished, and the completed run exits with code 0", signal_name)
            return
        if self.requested:
            logging.warning("%s received while stopping: ignored; the checkpoint is being saved "
                            "and the run exits right after", signal_name)
            return
        self.signal_name = signal_name
        self.requested_at = time.monotonic()
        logging.warning("%s received: finishing the step in flight, saving a checkpoint at that "
                        "step, then exiting with code %d", signal_name, EXIT_PREEMPTED)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        if not self._restore:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum, frame):
        del frame
        self.request(signal.Signals(signum).name)


class StopAgreement:
    """When a run stops: a `StopRequest` of this process, agreed on by every worker.

    `training/loop.py` asks it three things: the flag to feed into each training step
    (`step_flag`), whether to stop after a step (`after_step`, from the step's reduced
    `stop_requests`), and whether to stop at a point outside the steps (`at_boundary`, before the
    first step and after the last; a collective operation in a cluster).

    Args:
        stop: `StopRequest`.
        strategy: the run's `tf.distribute.Strategy`.
    """

    def __init__(self, stop, strategy):
        self.stop = stop
        self.strategy = strategy
        self.single_process = num_workers(strategy) == 1

    def step_flag(self):
        """The float32 scalar for `StepFunctions.train` (an array: a tensor to `tf.function`)."""
        return np.asarray(1.0 if self.stop.requested else 0.0, np.float32)

    def after_step(self, out):
        """Whether to stop after the step that returned `out`."""
        if self.single_process:
            # No peer to wait for: stop right after the step in flight.
            return self.stop.requested
        return out["stop_requests"] > 0

    def at_boundary(self):
        """Whether any worker was asked to stop; every worker must call it at the same point."""
        if self.single_process:
            return self.stop.requested
        return agree(self.strategy, self.stop.requested)

    @property
    def reason(self):
        """The signal of this process, or what stopped it when another worker got it."""
        return self.stop.signal_name or "a stop request of another worker"


def agree(strategy, requested):
    """Whether any worker of `strategy` requested a stop: one all-reduce over every replica.

    Every worker must call it at the same point of the run (it is a collective operation).
    """
    flag = tf.constant(1.0 if requested else 0.0, tf.float32)
    total = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flag)), axis=None)
    return float(total) > 0


def num_workers(strategy):
    """The processes of `strategy`'s cluster: the `chief` and `worker` tasks, else 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        # A TPU slice, however many hosts, is driven by this one client process.
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def unreachable_tasks(strategy, *, timeout=_PROBE_TIMEOUT_S):
    """The other tasks of `strategy`'s cluster that refuse or time out a TCP connection.

    Returns:
        list of (task name such as "worker_1", "host:port") in the cluster's order.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return []
    me = (resolver.task_type, resolver.task_id)
    lost = []
    for job, addresses in sorted(resolver.cluster_spec().as_dict().items()):
        items = addresses.items() if isinstance(addresses, dict) else enumerate(addresses)
        for index, address in items:
            if (job, index) == me:
                continue
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=timeout):
                    pass
            except (OSError, ValueError):
                lost.append((f"{job}_{index}", address))
    return lost


@contextlib.contextmanager
def explain_lost_workers(strategy, *, task, resume_step):
    """Re-raises the failure of a collective operation whose peer is gone as `WorkerLostError`.

    Only in a cluster (`num_workers(strategy) > 1`); elsewhere, and for other errors,
    exceptions pass through unchanged.

    Args:
        strategy: the run's `tf.distribute.Strategy`.
        task: str. This task's name, for the message.
        resume_step: callable returning the step a rerun resumes from (the last complete
            checkpoint; None if unknown here), called only after a failure.
    """
    if num_workers(strategy) <= 1:
        yield
        return
    try:
        yield
    except _PEER_ERRORS + _MAYBE_PEER_ERRORS as exc:
        logging.info("TensorFlow's error: %s", exc)
        lost, how = lost_tasks(strategy, exc, task=task)
        if not lost and isinstance(exc, _MAYBE_PEER_ERRORS):
            raise
        raise WorkerLostError(lost_worker_message(
            exc, task=task, lost=lost, how=how, resume_step=resume_step())) from exc


def lost_tasks(strategy, error, *, task):
    """The tasks of the cluster that `error` says are gone, and how that is known.

    In this order of trust: those whose `TF_CONFIG` address refuses or times out a connection;
    those TensorFlow's error names (the coordination service's "unhealthy" tasks, the remote
    target of a failed call); the coordination service's leader when this task's heartbeats to
    it time out.

    Returns:
        (list of names such as "worker_1 (host:port)" or "worker_1", str saying how they were
        found); an empty list when no task can be named.
    """
    unreachable = [f"{name} ({address})" for name, address in unreachable_tasks(strategy)]
    if unreachable:
        return unreachable, "no answer on its TF_CONFIG address"
    text = str(error)
    named = []
    for pattern in (r"unhealthy[^/]*((?:\s*/job:\w+/replica:\d+/task:\d+)+)",
                    r"remote target (/job:\w+/replica:\d+/task:\d+)"):
        for group in re.findall(pattern, text):
            named += [f"{job}_{index}" for job, index in
                      re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", group)]
    if not named and "CoordinationService/Heartbeat" in text:
        named = [coordination_leader(strategy)]
    return list(dict.fromkeys(name for name in named if name != task)), (
        "named by TensorFlow's error")


def lost_worker_message(error, *, task, lost, how, resume_step):
    """The message of `WorkerLostError`: who disappeared, and the step a rerun resumes from.

    Args:
        error: the TensorFlow error the survivor got.
        task: str. The survivor's name.
        lost, how: what `lost_tasks` returned.
        resume_step: int or None. The step of the last complete checkpoint; None when this
            task cannot see the chief's workdir.
    """
    if lost:
        who = f"task {', '.join(lost)} disappeared ({how})"
    else:
        who = "a task of the cluster stopped answering"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if re.search(
        r"aborted by|unhealthy|remote target|Deadline|Connection|Socket", line)),
        lines[0] if lines else "")
    where = (f"step {resume_step}, the last complete checkpoint" if resume_step is not None
             else "the last complete checkpoint in the chief's workdir (not visible from here)")
    return (f"{task} stopped: {who}. Rerunning the whole cluster with the same command resumes "
            f"from {where}. (TensorFlow: {type(error).__name__}: {detail[:300]})")


def coordination_leader(strategy):
    """The task that runs TensorFlow's coordination service: chief_0, else worker_0."""
    jobs = strategy.cluster_resolver.cluster_spec().as_dict()
    return "chief_0" if jobs.get("chief") else "worker_0"


def exit_now(code):
    """Ends the process with `code` at once, immune to further signals.

    Two reasons not to leave through the interpreter's normal shutdown. It restores the
    default signal handlers and then tears TensorFlow down for a second or more, so a second
    SIGTERM landing then would end the process by signal (-15) instead of with `code`. And
    with a worker of the cluster gone, TensorFlow's teardown waits for it (measured: 4.2 s
    instead of 0.2 s on loopback). The run's files are complete and closed when this is called
    (checkpoints and outputs are written atomically, the writers closed), so nothing is lost.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    logging.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
