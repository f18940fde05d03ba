"""What kind of work a profiled op is, and the op events of a TensorFlow or JAX profiler trace.

Kept apart from `train_step_profile.py`, whose absl flags would otherwise be defined in any
process that imports these (the tests do).
"""

import glob
import os
import re


def kind(op_type, name):
    """The kind of a TensorFlow op (type and scoped name) or an XLA thunk (HLO name)."""
    lower = f"{op_type} {name}".lower()
    if "adam_w/" in lower or "_foreach_" in lower:
        return "optimizer"
    if any(word in lower for word in ("matmul", "conv2d", "convolution", "einsum", "ynn_fusion",
                                      "dot", "aten::mm", "aten::bmm", "aten::addmm",
                                      "aten::baddbmm", "attention", "onednn")):
        return "matmul"
    if "softmax" in lower:
        return "softmax"
    # "cast" as a word: not the "bitcast" or "broadcast" of XLA fusion names.
    if re.search(r"(?<![a-z])cast", lower) or "convert" in lower or "aten::to" in lower \
            or "_to_copy" in lower:
        return "cast"
    if any(word in lower for word in ("transpose", "copy", "concat", "pack", "slice", "permute",
                                      "contiguous", "clone", "cat", "stack", "pad", "tile")):
        return "layout"
    return "other"


def xplane_events(logdir):
    """(line name, event name, display name, stats dict, microseconds) of a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        raise RuntimeError(f"no profiler trace (*.xplane.pb) under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as trace:
        space.ParseFromString(trace.read())
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        stat_names = {key: value.name for key, value in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                stats = {stat_names[s.metadata_id]: s.str_value or
                         (stat_names.get(s.ref_value, "") if s.ref_value else s.int64_value)
                         for s in event.stats}
                yield (line.name, metadata.name, metadata.display_name, stats,
                       event.duration_ps / 1e6)
