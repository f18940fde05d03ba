"""Several processes preparing the embedded `digits` into one empty data_dir at once."""

import os
import subprocess
import sys
import time

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training binary needs the TensorFlow backend")

# The other process: imports the pipeline, says it is ready, waits for the start signal, then
# prepares and describes the dataset, as each worker of a multi-worker run does.
_OTHER = """
import os, sys, time
from training import input_pipeline
data_dir, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
info = input_pipeline.dataset_info("digits", data_dir=data_dir, image_size=8)
print(info.num_train_examples, info.num_eval_examples)
"""


def test_two_processes_prepare_digits_into_one_empty_folder(tmp_path, subprocess_env, repo_root):
    from training import input_pipeline

    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    ready, go = tmp_path / "ready", tmp_path / "go"
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER, str(data_dir), str(ready), str(go)], cwd=repo_root,
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and other.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), other.communicate(timeout=60)
        go.touch()  # both start preparing now
        info = input_pipeline.dataset_info("digits", data_dir=str(data_dir), image_size=8)
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, err[-3000:]
    assert out.splitlines()[-1].split() == ["1438", "359"]  # TFDS prints before it
    assert (info.num_train_examples, info.num_eval_examples) == (1438, 359)
    # One prepared version, no folder left half-made; the lock file and TFDS's downloads/ beside.
    assert sorted(os.listdir(data_dir)) == [".digits.prepare.lock", "digits", "downloads"]
    assert os.listdir(data_dir / "digits") == ["1.0.0"]
