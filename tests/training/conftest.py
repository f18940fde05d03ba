"""Fixtures of the training binary's tests: prepared data, tiny configs, subprocess settings.

Test modules get the helpers below as fixtures (`tiny_config`, `tiny_flags`, `subprocess_env`
return the functions), since test directories are not packages and cannot import each other.
"""

import os

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
    """A TFDS data directory with the embedded `digits` prepared (offline, about a second)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the training binary needs the TensorFlow backend")
    import tensorflow_datasets as tfds

    import training.datasets  # noqa: F401  (registers "digits")

    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("digits", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


@pytest.fixture(scope="session")
def repo_root():
    """The checkout's root: the working directory of subprocesses running the binary."""
    return REPO


@pytest.fixture(name="tiny_config", scope="session")
def tiny_config_fixture():
    return tiny_config


@pytest.fixture(name="tiny_flags", scope="session")
def tiny_flags_fixture():
    return tiny_flags


@pytest.fixture(name="subprocess_env", scope="session")
def subprocess_env_fixture():
    return subprocess_env


def tiny_config(data_dir, **overrides):
    """A `Config` that trains in a second: a 1-block ViT on 8x8 digits, no export, no bar."""
    from training.config import Config

    settings = dict(
        data_dir=data_dir,
        variant="mu/4",
        image_size=8,
        global_batch_size=16,
        train_steps=6,
        warmup_steps=2,
        checkpoint_every_steps=3,
        log_every_steps=2,
        progress=False,
        export=False,
    )
    settings.update(overrides)
    return Config(**settings)


def tiny_flags(data_dir, **overrides):
    """Command-line flags of the same tiny run as `tiny_config`."""
    settings = {
        "data_dir": data_dir, "variant": "mu/4", "image_size": 8, "global_batch_size": 16,
        "train_steps": 6, "warmup_steps": 2, "checkpoint_every_steps": 3, "progress": False,
        "export": False,
    }
    settings.update(overrides)
    flags = []
    for name, value in settings.items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no{name}")
        else:
            flags.append(f"--{name}={value}")
    return flags


def run_outside_checkout(script, path, arrays, workdir, *, timeout=300):
    """Runs `script` (Python source) on `path` and saved arrays where this checkout is unknown.

    The script runs as `python script.py PATH inputs.npz outputs.npz` in `workdir`, with nothing
    of this checkout importable (no PYTHONPATH), so that what it loads is proven to run without
    keras_vit. It must write `outputs.npz` and print a JSON description as its last line.

    Returns:
        (description, {name: array} of outputs.npz).
    """
    import json
    import subprocess
    import sys

    import numpy as np

    np.savez(os.path.join(workdir, "inputs.npz"), **arrays)
    script_path = os.path.join(workdir, "outside_checkout.py")
    with open(script_path, "w") as f:
        f.write(script)
    env = subprocess_env()
    env.pop("PYTHONPATH")
    proc = subprocess.run(
        [sys.executable, script_path, str(path), os.path.join(workdir, "inputs.npz"),
         os.path.join(workdir, "outputs.npz")],
        cwd=str(workdir), env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    description = json.loads(proc.stdout.strip().splitlines()[-1])
    return description, dict(np.load(os.path.join(workdir, "outputs.npz")))


@pytest.fixture(name="run_outside_checkout", scope="session")
def run_outside_checkout_fixture():
    return run_outside_checkout


def subprocess_env(**extra):
    """The environment of a subprocess running the binary from this checkout."""
    env = dict(os.environ)
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env
