"""The README's few-shot example with a loaded tower runs, as written, on a tower written by
transformers.

The example names `dinov2_s14` (downloaded from the Hub); here the same code loads a tiny random
DINOv2 that transformers wrote (no network), at 56 pixels instead of 224 to keep it cheap. The
code is read from README.md, so the README cannot drift from what runs.
"""

import contextlib
import io
import os
import re

import pytest

import torch_reference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sklearn")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _fewshot_example():
    with open(README) as f:
        text = f.read()
    section = text.split("## DINOv2, CLIP and SigLIP towers", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_fewshot_example_runs_with_a_loaded_tower(tmp_path):
    code = _fewshot_example()
    assert 'weights="dinov2_s14"' in code and "(224, 224)" in code
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, mlp_ratio=2, image_size=28,
                                       patch_size=14)
    reference = torch_reference.randomize(transformers.Dinov2Model(config), seed=0)
    folder = torch_reference.save_hf(reference, tmp_path / "tiny_dinov2")
    code = (code.replace('weights="dinov2_s14"', f"weights={folder!r}")
            .replace("image_size=224", "image_size=56").replace("(224, 224)", "(56, 56)"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    result = eval(printed.getvalue().strip().splitlines()[-1])
    assert sorted(result) == [1, 5, 10]
    assert all(len(result[shot]["accuracies"]) == 3 for shot in result)
    # Ten classes: chance is 0.1. A frozen random tower's features still separate digits (0.29
    # to 0.33 at 10 shots on the three backends): twice chance leaves room for the draws.
    assert result[10]["mean"] > 0.2, result
