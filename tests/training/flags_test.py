"""Tests of training/flags.py: every binary's flags from its table, one guard, one definition."""

import json
import subprocess
import sys
import textwrap

import pytest

# The script runs in a TensorFlow subprocess whatever this run's backend, so one run suffices
# (tests/all_backends.sh).
pytestmark = pytest.mark.backend_independent

_SCRIPT = textwrap.dedent("""
    import json, sys
    from absl import flags as absl_flags
    from training import flags as f

    # The flags module alone does not load the input pipeline (TFDS, keras-cv) nor the exports.
    heavy = ("training.export_formats", "training.input_pipeline", "keras_cv",
             "tensorflow_datasets")
    loaded_with_flags = sorted(m for m in heavy if m in sys.modules)

    # Every binary's flags in one process (as a test session or a notebook may do), then again.
    for define in (f.define_training_flags, f.define_export_flags, f.define_explain_flags,
                   f.define_fewshot_flags, f.define_convert_flags, f.define_training_flags,
                   f.define_fewshot_flags):
        define()
    names = ["workdir", "dataset", "variant", "image_size", "pooling", "model", "output_dir",
             "head_fusion", "num_components", "shots", "l2_reg", "npz", "num_classes"]
    result = {name: f.FLAGS[name].default for name in names}
    result["head_fusion_choices"] = sorted(f.FLAGS["head_fusion"].parser.enum_values)
    result["loaded_with_flags"] = loaded_with_flags
    # The export binary's choices are training.export_formats' own.
    from training import export_formats
    result["export_choices"] = [
        list(f.FLAGS["format"].parser.enum_values), list(export_formats.FORMATS),
        list(f.FLAGS["quantize"].parser.enum_values), list(export_formats.QUANTIZATIONS),
        f.FLAGS["opset"].default, export_formats.ONNX_OPSET]
    try:
        f.FLAGS(["binary"])
    except absl_flags.IllegalFlagValueError as exc:
        result["error"] = str(exc)
    print(json.dumps(result))
""")


def test_all_binaries_flags_in_one_process(repo_root, subprocess_env):
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=repo_root, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # A shared name keeps its first definition: here the training binary's, from Config.
    assert result["dataset"] == "digits" and result["variant"] == "mu/4"
    assert result["image_size"] == 16 and result["pooling"] == "gap"
    # Flags only one binary has take that binary's table defaults.
    assert result["head_fusion"] == "mean" and result["num_components"] == 28
    assert result["head_fusion_choices"] == ["max", "mean", "min"]
    assert result["loaded_with_flags"] == []
    formats, quantizations = ["saved_model", "litert", "onnx"], ["none", "float16",
                                                                 "dynamic_range", "int8"]
    assert result["export_choices"] == [formats, formats, quantizations, quantizations, 18, 18]
    assert result["shots"] == ["1", "5", "10", "25"] and result["l2_reg"] == 1024.0
    assert result["model"] is None and result["npz"] is None and result["num_classes"] is None
    # Required flags are checked at parse time; the first missing one is named.
    assert "--workdir must have a value other than None" in result["error"]
