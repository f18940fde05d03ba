"""`--strategy` string -> `tf.distribute.Strategy`, and the chief/worker roles of a cluster.

The training binary runs one custom training loop under every strategy (see `training/train.py`),
so the strategies differ only in how they are built here:

| name           | strategy                               | replicas                                |
|----------------|----------------------------------------|-----------------------------------------|
| `default`      | `tf.distribute.get_strategy()`         | 1, on TensorFlow's default device       |
| `one_device`   | `OneDeviceStrategy`                    | 1, on the first GPU, else the CPU       |
| `mirrored`     | `MirroredStrategy`                     | every local GPU, else every logical CPU |
| `multi_worker` | `MultiWorkerMirroredStrategy`          | every worker of `TF_CONFIG`, x its GPUs |
| `tpu`          | `TPUStrategy` via `TPUClusterResolver` | every TPU core of the slice             |

Build the strategy before TensorFlow runs anything else: `MultiWorkerMirroredStrategy` and the
TPU system must configure the runtime before it starts.
"""

import json
import os

import tensorflow as tf

from keras_vit.validation import check_choice

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name, *, tpu=None):
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: str. One of `STRATEGIES`.
        tpu: str or None. For `name="tpu"`: what `TPUClusterResolver` takes, a TPU name, a
            `grpc://` address or `"local"` (the TPU attached to a TPU VM); `""` or None read
            `$TPU_NAME`. Ignored by the other strategies. Defaults to None.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: an unknown name; `multi_worker` without a usable `TF_CONFIG`; `tpu` when no
            TPU can be found.

    Example:

    >>> get_strategy("default").num_replicas_in_sync
    1
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        # MirroredStrategy() alone takes every GPU, or only /cpu:0 when there is none; listing the
        # logical CPUs explicitly lets a machine without GPUs (and the tests, which split the CPU
        # into logical devices) run several real replicas.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        cluster_spec()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def cluster_spec():
    """Parses `TF_CONFIG` and checks it describes this task in a cluster.

    Returns:
        The parsed `TF_CONFIG` dict.

    Raises:
        ValueError: `TF_CONFIG` unset, not JSON, or without a `cluster` that
            lists this task's `task.type`/`task.index`.
    """
    raw = os.environ.get("TF_CONFIG", "")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not raw.strip():
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable describing the "
            f"cluster and this task, e.g. {example}; it is not set"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc}): {raw!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG {raw!r} has no 'cluster' mapping; expected e.g. {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(
            f"TF_CONFIG {raw!r} has no 'task' with 'type' and 'index'; expected e.g. {example}"
        )
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(
            f"TF_CONFIG task {task!r} is not in its cluster {cluster!r}: expected a type listed in "
            "the cluster and an index below the number of its addresses"
        )
    return config


def is_chief(strategy):
    """Whether this process is the chief: the one that writes the outputs of a run.

    A single-machine strategy is always the chief. In a cluster it is the `chief` task, or
    worker 0 when the cluster has no `chief` (the `TF_CONFIG` convention).

    Args:
        strategy: a `tf.distribute.Strategy`.

    Returns:
        bool.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        # A TPU slice is driven by this one host process.
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def task_name(strategy):
    """A short name of this process for logs and temporary paths, e.g. "worker_1"."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return "local"
    return f"{resolver.task_type}_{resolver.task_id}"


def _tpu_strategy(tpu):
    # tpu=None lets the resolver read $TPU_NAME; "local" is the TPU attached to a TPU VM. A TPU
    # name is looked up on the GCE metadata server (an OSError where there is none).
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError, OSError) as exc:
        where = f"--tpu={tpu!r}" if tpu else "this machine (no --tpu given)"
        raise ValueError(
            f"--strategy=tpu found no TPU for {where}: {exc}. Pass --tpu=NAME or a grpc:// "
            "address, or run on a TPU VM"
        ) from exc
    return tf.distribute.TPUStrategy(resolver)
