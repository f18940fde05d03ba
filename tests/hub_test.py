"""Tests of keras_vit/hub.py: checkpoints written by transformers, timm and safetensors themselves,
in folders, as single files, and served by a loopback stand-in for the Hugging Face Hub.

Nothing is downloaded from outside: every `hf://` test points huggingface_hub at a server on
127.0.0.1 started here, with a cache of its own under `tmp_path`.
"""

import dataclasses
import doctest
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hub_server import fake_hub, go_offline, never_the_real_hub, no_backoff  # noqa: F401

from keras_vit import hub

torch = pytest.importorskip("torch", reason="writes the reference checkpoints")
transformers = pytest.importorskip("transformers", reason="writes the reference checkpoints")
timm = pytest.importorskip("timm", reason="writes the reference checkpoints")
huggingface_hub = pytest.importorskip("huggingface_hub", reason="the hub extra")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the hub extra")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the hub extra")
# Files, HTTP and huggingface_hub only (the references are written by torch, whatever the Keras
# backend): tests/all_backends.sh runs this file under one backend.
pytestmark = pytest.mark.backend_independent

# The tiny transformers ViT: 16x16 images of 4x4 patches, (16/4)^2 + 1 = 17 tokens of width 32.
# Parameters: embeddings 32 (cls) + 17*32 (positions) + 4*4*3*32 + 32 (patches) = 2,144; each of
# 2 layers 3*(32*32 + 32) (qkv) + 32*32 + 32 (out) + 32*64 + 64 + 64*32 + 32 (MLP) + 2*64 (two
# LayerNorms) = 8,544; final LayerNorm 64; classifier 32*3 + 3 = 99: 19,395 in 4 + 2*16 + 2 + 2
# = 40 tensors.
VIT_PARAMETERS, VIT_TENSORS = 19_395, 40
PICKLE_REFUSAL = (
    "keras_vit never unpickles weights, because unpickling a file can run arbitrary code. Ask for "
    "a safetensors revision (the Hub's 'refs/pr/N' conversions: hf://ORG/NAME@refs/pr/N), or "
    "convert it yourself with safetensors.torch.save_file in a trusted environment.")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Folders written by the real libraries: transformers' save_pretrained whole ("single",
    with its image processor's preprocessor_config.json) and sharded at 20 KB ("sharded"), and
    timm's save_for_hf with its default (pickle only, "timm_pickle") and with safetensors."""
    root = tmp_path_factory.mktemp("written")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=3)
    model = transformers.ViTForImageClassification(config)
    model.save_pretrained(root / "single")
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(
        root / "single")
    model.save_pretrained(root / "sharded", max_shard_size="20KB")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4,
                            embed_dim=32, depth=2, num_heads=2, num_classes=3)
    timm.models.save_for_hf(vit, root / "timm_pickle", safe_serialization=False)  # 1.0's default
    timm.models.save_for_hf(vit, root / "timm", safe_serialization=True)
    return root


def _shard_names(written):
    """The shards transformers wrote, in order (five with transformers 5.25)."""
    return sorted(n for n in os.listdir(written / "sharded") if n.endswith(".safetensors"))


def _assert_same_tensors(actual, expected):
    assert list(actual) == list(expected)
    for key, array in expected.items():
        assert actual[key].dtype == array.dtype, key
        np.testing.assert_array_equal(actual[key], array, err_msg=key)


# --- References ------------------------------------------------------------------------------


def test_references_are_recognised(written, tmp_path):
    assert hub.is_hub_reference("hf://google/vit-base-patch16-224")
    assert not hub.is_hub_reference("https://huggingface.co/google/vit-base-patch16-224")
    assert not hub.is_hub_reference(None)
    assert hub.is_checkpoint_folder(written / "single")
    assert hub.is_checkpoint_folder(str(written / "single"))
    assert not hub.is_checkpoint_folder(tmp_path)  # no config.json
    assert not hub.is_checkpoint_folder(written / "single" / "config.json")  # a file
    assert not hub.is_checkpoint_folder(3)
    assert hub.is_reference("hf://timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")
    assert hub.is_reference(written / "sharded")
    assert hub.is_reference(tmp_path / "not_written_yet.safetensors")
    assert not hub.is_reference(tmp_path)
    assert not hub.is_reference("ViT-B_16.npz")
    assert not hub.is_reference(written / "timm_pickle" / "pytorch_model.bin")


@pytest.mark.parametrize("reference", [
    "hf://", "hf://name-without-org", "hf://a/b/c", "hf://org/name@", "hf://org/", "hf:///name",
    "hf://org/na me", "hf://org/name@@main", "hf://org/name@ma in",
])
def test_malformed_references_are_refused(reference):
    with pytest.raises(ValueError) as error:
        hub.locate(reference)
    assert str(error.value) == (
        f"a hub reference must be hf://ORG/NAME[@REVISION], received {reference!r}")


def test_other_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match=re.escape(
            "weights must be hf://ORG/NAME[@REVISION], a checkpoint folder or a .safetensors "
            "file, received 'ViT-B_16.npz', which is none of these")):
        hub.locate("ViT-B_16.npz")
    with pytest.raises(ValueError, match=r"received 16$"):
        hub.locate(16)
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=f"^safetensors file {re.escape(missing)} does not exist$"):
        hub.locate(missing)
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path} is not a checkpoint folder: it has no config.json")):
        hub.locate(tmp_path)


def test_examples_run():
    result = doctest.testmod(hub)
    assert result.attempted >= 3 and result.failed == 0


# --- Folders and files -----------------------------------------------------------------------


def test_transformers_folder(written):
    folder = written / "single"
    files = hub.locate(folder)
    assert files.name == str(folder)
    assert files.root == str(folder)
    assert files.weight_files == (str(folder / "model.safetensors"),)
    assert files.config == json.loads((folder / "config.json").read_text())
    assert {k: files.config[k] for k in ("model_type", "hidden_size", "num_hidden_layers",
                                         "num_attention_heads", "intermediate_size",
                                         "image_size", "patch_size")} == {
        "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "image_size": 16, "patch_size": 4}
    assert files.config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert files.preprocessor_config["size"] == {"height": 16, "width": 16}
    assert files.preprocessor_config["image_mean"] == [0.5, 0.5, 0.5]

    tensors = hub.read_tensors(files)
    _assert_same_tensors(tensors, safetensors_numpy.load_file(folder / "model.safetensors"))
    assert len(tensors) == VIT_TENSORS
    assert sum(a.size for a in tensors.values()) == VIT_PARAMETERS
    assert tensors["vit.embeddings.position_embeddings"].shape == (1, 17, 32)
    assert tensors["vit.embeddings.patch_embeddings.projection.weight"].shape == (32, 3, 4, 4)
    assert tensors["classifier.weight"].shape == (3, 32)
    # transformers 5 writes the names of its 4.x layout (its in-memory modules are named
    # vit.layers.0.attention.q_proj... and renamed on save); these are what checkpoints hold.
    assert tensors["vit.encoder.layer.1.attention.attention.query.weight"].shape == (32, 32)
    assert tensors["vit.encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)


def test_config_only_reads_no_weights(written):
    files = hub.locate(written / "single", config_only=True)
    assert files.weight_files == ()
    assert files.config["hidden_size"] == 32
    with pytest.raises(ValueError, match=re.escape(
            f"{written / 'single'} has no weight files to read (was it located with "
            "config_only=True?)")):
        hub.read_tensors(files)


def test_sharded_folder_reads_as_the_whole_checkpoint(written):
    folder = written / "sharded"
    # What transformers writes: model-0000i-of-0000N.safetensors and an index of tensor ->
    # shard, nothing else.
    shards = _shard_names(written)
    assert len(shards) > 1
    assert all(re.fullmatch(rf"model-\d{{5}}-of-{len(shards):05d}\.safetensors", n) for n in shards)
    assert sorted(os.listdir(folder)) == (
        ["config.json"] + shards + ["model.safetensors.index.json"])
    files = hub.locate(folder)
    assert files.weight_files == tuple(str(folder / name) for name in shards)
    assert files.preprocessor_config is None
    tensors = hub.read_tensors(files)
    whole = hub.read_tensors(hub.locate(written / "single"))
    assert sorted(tensors) == sorted(whole) and len(tensors) == VIT_TENSORS
    for key in whole:
        np.testing.assert_array_equal(tensors[key], whole[key], err_msg=key)


def test_timm_folder(written):
    folder = written / "timm"
    files = hub.locate(folder)
    assert files.config["architecture"] == "vit_tiny_patch16_224"
    assert files.config["model_args"]["embed_dim"] == 32
    tensors = hub.read_tensors(files)
    _assert_same_tensors(tensors, safetensors_numpy.load_file(folder / "model.safetensors"))
    # patches 4*4*3*32 + 32, cls 32, positions 17*32, 2 blocks of 12,704, norm 64, head 99.
    assert sum(a.size for a in tensors.values()) == 27_715
    assert tensors["pos_embed"].shape == (1, 17, 32)


def test_single_file_with_and_without_its_config(written, tmp_path):
    path = written / "single" / "model.safetensors"
    files = hub.locate(path)
    assert (files.name, files.root, files.weight_files) == (
        str(path), str(written / "single"), (str(path),))
    assert files.config["hidden_size"] == 32
    assert files.preprocessor_config["size"] == {"height": 16, "width": 16}
    alone = tmp_path / "weights.safetensors"
    shutil.copy(path, alone)
    files = hub.locate(str(alone))
    assert (files.config, files.preprocessor_config, files.weight_files) == (
        None, None, (str(alone),))
    _assert_same_tensors(hub.read_tensors(files), safetensors_numpy.load_file(path))


def test_bfloat16_is_read_as_float32_and_float16_is_kept(tmp_path):
    path = tmp_path / "mixed.safetensors"
    torch.manual_seed(0)
    stored = {"a": torch.randn(3, 4).to(torch.bfloat16), "h": torch.randn(5).half(),
              "f": torch.randn(2, 2), "empty": torch.zeros(0, 3, dtype=torch.bfloat16)}
    safetensors_torch.save_file(stored, path)
    tensors = hub.read_tensors(hub.locate(path))
    assert sorted(tensors) == ["a", "empty", "f", "h"]
    assert tensors["a"].dtype == np.float32 and tensors["a"].shape == (3, 4)
    np.testing.assert_array_equal(tensors["a"], stored["a"].float().numpy())
    assert tensors["empty"].dtype == np.float32 and tensors["empty"].shape == (0, 3)
    assert tensors["h"].dtype == np.float16
    np.testing.assert_array_equal(tensors["h"], stored["h"].numpy())
    np.testing.assert_array_equal(tensors["f"], stored["f"].numpy())


def test_a_dtype_numpy_lacks_is_named(tmp_path):
    path = tmp_path / "fp8.safetensors"
    safetensors_torch.save_file({"q": torch.zeros(4).to(torch.float8_e4m3fn)}, path)
    with pytest.raises(ValueError) as error:
        hub.read_tensors(hub.locate(path))
    assert str(error.value) == (
        f"{path}: tensor 'q' has dtype F8_E4M3, which keras_vit does not read (it reads BOOL, "
        "F16, F32, F64, I16, I32, I64, I8, U16, U32, U64, U8 and BF16)")


# --- Refused and damaged files ---------------------------------------------------------------


class _Payload:
    """A pickle that creates a directory when unpickled: proof if anything unpickles it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickled_folders_are_refused_unopened(written, tmp_path):
    folder = written / "timm_pickle"  # timm's save_for_hf default: config.json and a pickle
    with pytest.raises(ValueError) as error:
        hub.locate(folder)
    assert str(error.value) == (
        f"checkpoint folder {folder} holds only pickled weights (pytorch_model.bin). "
        + PICKLE_REFUSAL)
    marker = tmp_path / "unpickled"
    shutil.copy(written / "single" / "config.json", tmp_path / "config.json")
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    torch.save({"w": torch.zeros(2)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=re.escape(
            "holds only pickled weights (extra.pth, pytorch_model.bin). keras_vit never")):
        hub.locate(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pth", "model.pt", "last.ckpt",
                                  "open_clip_pytorch_model.bin"])
def test_pickled_files_are_refused_unopened(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(ValueError) as error:
        hub.locate(path)
    assert str(error.value) == f"{path} is a pickled checkpoint. " + PICKLE_REFUSAL
    assert not marker.exists()


def test_pickle_and_safetensors_folder_uses_the_safetensors(written, tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(written / "timm", folder)
    shutil.copy(written / "timm_pickle" / "pytorch_model.bin", folder)
    assert hub.locate(folder).weight_files == (str(folder / "model.safetensors"),)


def test_folder_without_weights(written, tmp_path):
    shutil.copy(written / "single" / "config.json", tmp_path)
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"")
    # Not "only pickles": a safetensors file is there, under a name of its own.
    with pytest.raises(ValueError) as error:
        hub.locate(tmp_path)
    assert str(error.value) == (
        f"checkpoint folder {tmp_path} has neither model.safetensors nor "
        "model.safetensors.index.json (it holds: config.json, open_clip_model.safetensors, "
        "open_clip_pytorch_model.bin)")


@pytest.mark.parametrize("keep, problem", [
    (4, "it has 4 bytes, fewer than the 8 of the header length"),
    (100, r"its header length is \d+ bytes but only 92 follow \(truncated\)"),
    (-10, r"tensor '[\w.]+' ends at data byte \d+ but the file holds \d+ \(truncated\)"),
])
def test_truncated_files_are_named(written, tmp_path, keep, problem):
    data = (written / "single" / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[:keep])
    files = hub.locate(path)
    with pytest.raises(ValueError, match=(
            f"^{re.escape(str(path))} is damaged or not a safetensors file: {problem}; write or "
            "download it again$")):
        hub.read_tensors(files)


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    path = tmp_path / "page.safetensors"
    path.write_bytes((12).to_bytes(8, "little") + b"<html></html>")
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is damaged or not a safetensors file: its header is not JSON")):
        hub.read_tensors(hub.locate(path))


def test_bytes_no_tensor_covers_are_refused_by_safetensors(written, tmp_path):
    # The header is intact, so only safetensors' own check sees this one.
    path = tmp_path / "model.safetensors"
    path.write_bytes((written / "single" / "model.safetensors").read_bytes() + b"appended")
    with pytest.raises(ValueError, match=(
            f"^{re.escape(str(path))} is damaged or not a safetensors file: .*file not fully "
            "covered; write or download it again$")):
        hub.read_tensors(hub.locate(path))


def _copy_sharded(written, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(written / "sharded", folder)
    return folder


def test_a_missing_shard_is_named(written, tmp_path):
    folder = _copy_sharded(written, tmp_path)
    os.remove(folder / _shard_names(written)[2])
    with pytest.raises(ValueError) as error:
        hub.locate(folder)
    assert str(error.value) == (
        f"{folder / 'model.safetensors.index.json'} lists the shard {_shard_names(written)[2]}, "
        f"which is missing from {folder}")


def test_a_tensor_missing_from_its_shard_is_named(written, tmp_path):
    folder = _copy_sharded(written, tmp_path)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["vit.pooler.dense.weight"] = _shard_names(written)[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError) as error:
        hub.locate(folder)
    assert str(error.value) == (
        f"{index_path} lists the tensor 'vit.pooler.dense.weight' in "
        f"{folder / _shard_names(written)[1]}, which does not hold it")


def test_a_shard_outside_the_folder_is_refused(written, tmp_path):
    folder = _copy_sharded(written, tmp_path)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["classifier.bias"] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=re.escape(
            f"{index_path} lists the shard '../elsewhere.safetensors': expected a .safetensors "
            "file name beside the index")):
        hub.locate(folder)


def test_a_tensor_in_two_shards_is_named(written, tmp_path):
    shutil.copy(written / "single" / "config.json", tmp_path)
    first, second = tmp_path / "model-1.safetensors", tmp_path / "model-2.safetensors"
    safetensors_numpy.save_file({"a": np.zeros(2, np.float32), "b": np.ones(1, np.float32)},
                                first)
    safetensors_numpy.save_file({"b": np.ones(1, np.float32)}, second)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": first.name, "b": second.name}}))
    files = hub.locate(tmp_path)
    assert files.weight_files == (str(first), str(second))
    with pytest.raises(ValueError) as error:
        hub.read_tensors(files)
    assert str(error.value) == f"tensor 'b' is stored twice: in {first} and in {second}"


def test_without_the_extra(written, monkeypatch):
    # Folders are found without huggingface_hub; hf:// and reading need the "hub" extra.
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    files = hub.locate(written / "sharded")
    assert len(files.weight_files) == len(_shard_names(written))
    with pytest.raises(ImportError) as error:
        hub.locate("hf://org/vit")
    assert str(error.value) == ('hf:// weights need the "hub" extra: pip install '
                                '"keras-vit[hub]" (huggingface_hub and safetensors)')
    message = re.escape('safetensors weights need the "hub" extra: pip install "keras-vit[hub]"')
    with pytest.raises(ImportError, match=message):
        hub.read_tensors(files)
    with pytest.raises(ImportError, match=message):
        hub.import_safetensors_numpy()


def test_import_safetensors_numpy():
    assert hub.import_safetensors_numpy() is safetensors_numpy


# --- The Hub, on 127.0.0.1 (tests/hub_server.py) ----------------------------------------------


def _folder_files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def _snapshot(fake_hub, repo_id, commit):
    return fake_hub.cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit


def test_hub_downloads_once_then_uses_the_cache(written, fake_hub):
    source = _folder_files(written / "single")
    commit = fake_hub.add("org/vit", source)
    files = hub.locate("hf://org/vit")
    snapshot = _snapshot(fake_hub, "org/vit", commit)
    assert (files.name, files.root) == ("hf://org/vit", str(snapshot))
    assert files.weight_files == (str(snapshot / "model.safetensors"),)
    assert files.config == json.loads(source["config.json"])
    assert files.preprocessor_config == json.loads(source["preprocessor_config.json"])
    for name, data in source.items():
        assert (snapshot / name).read_bytes() == data
    _assert_same_tensors(hub.read_tensors(files),
                         safetensors_numpy.load_file(written / "single" / "model.safetensors"))
    # Each file downloaded once; after config.json, at the commit main resolved to.
    assert [p for m, p in fake_hub.hub_requests() if m == "GET"] == [
        "/org/vit/resolve/main/config.json",
        f"/org/vit/resolve/{commit}/preprocessor_config.json",
        f"/org/vit/resolve/{commit}/model.safetensors"]

    # Warm cache: a branch is asked once (it may have moved), the files are not.
    fake_hub.requests.clear()
    assert hub.locate("hf://org/vit") == files
    assert fake_hub.hub_requests() == [("HEAD", "/org/vit/resolve/main/config.json")]
    # A commit never moves: no request at all.
    fake_hub.requests.clear()
    assert hub.locate(f"hf://org/vit@{commit}").weight_files == files.weight_files
    assert fake_hub.requests == []


def test_hub_offline_uses_only_the_cache(written, fake_hub, monkeypatch):
    commit = fake_hub.add("org/vit", _folder_files(written / "sharded"))
    online = hub.locate("hf://org/vit")
    assert online.weight_files == tuple(
        str(_snapshot(fake_hub, "org/vit", commit) / name) for name in _shard_names(written))
    fake_hub.requests.clear()
    go_offline(monkeypatch)
    assert hub.locate("hf://org/vit") == online
    assert hub.locate(f"hf://org/vit@{commit}").weight_files == online.weight_files
    assert fake_hub.requests == []
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/other")
    assert str(error.value) == (
        f"hf://org/other: config.json is not in the Hugging Face cache ({fake_hub.cache}) and "
        "HF_HUB_OFFLINE is set, so the Hub is not asked; download it once with network access, "
        "or point HF_HUB_CACHE at a cache that holds it")
    assert fake_hub.requests == []


def test_hub_offline_with_only_the_configs_cached(written, fake_hub, monkeypatch):
    fake_hub.add("org/vit", _folder_files(written / "single"))
    files = hub.locate("hf://org/vit", config_only=True)
    assert (files.weight_files, files.config["hidden_size"]) == ((), 32)
    assert not any("model.safetensors" in p for m, p in fake_hub.hub_requests())
    go_offline(monkeypatch)
    assert hub.locate("hf://org/vit", config_only=True) == files
    with pytest.raises(ValueError, match=re.escape(
            "hf://org/vit: model.safetensors (or model.safetensors.index.json) is not in the "
            f"Hugging Face cache ({fake_hub.cache}) and HF_HUB_OFFLINE is set")):
        hub.locate("hf://org/vit")


def test_hub_sharded_and_a_known_missing_file_cost_no_request(written, fake_hub):
    commit = fake_hub.add("org/sharded", _folder_files(written / "sharded"))
    files = hub.locate("hf://org/sharded")
    assert files.preprocessor_config is None
    whole = hub.read_tensors(hub.locate(written / "single"))
    tensors = hub.read_tensors(files)
    assert sorted(tensors) == sorted(whole)
    for key in whole:
        np.testing.assert_array_equal(tensors[key], whole[key], err_msg=key)
    # The Hub said preprocessor_config.json and model.safetensors do not exist at this commit;
    # the cache remembers it, so asking again costs nothing.
    fake_hub.requests.clear()
    pinned = hub.locate(f"hf://org/sharded@{commit}")
    assert pinned == dataclasses.replace(files, name=f"hf://org/sharded@{commit}")
    assert fake_hub.requests == []


def test_hub_revision_and_a_moved_branch(written, fake_hub):
    main = fake_hub.add("org/vit", _folder_files(written / "single"))
    converted = fake_hub.add("org/vit", _folder_files(written / "timm"), revision="refs/pr/1")
    files = hub.locate("hf://org/vit@refs/pr/1")
    assert files.root == str(_snapshot(fake_hub, "org/vit", converted))
    assert files.config["architecture"] == "vit_tiny_patch16_224"
    assert hub.locate("hf://org/vit").root == str(_snapshot(fake_hub, "org/vit", main))
    # main moves to a new commit: the next call finds and downloads it.
    moved = fake_hub.add("org/vit", _folder_files(written / "sharded"))
    files = hub.locate("hf://org/vit")
    assert files.root == str(_snapshot(fake_hub, "org/vit", moved))
    assert len(files.weight_files) == len(_shard_names(written))


def test_hub_errors_name_the_reference(written, fake_hub):
    fake_hub.add("org/vit", _folder_files(written / "single"))
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/missing")
    assert str(error.value) == (
        f"hf://org/missing: no repository org/missing on {fake_hub.endpoint}; check the name, or "
        "set HF_TOKEN to a token that may read it if it is private")
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/vit@v9")
    assert str(error.value) == (
        "hf://org/vit@v9: the repository org/vit has no revision 'v9'; give an existing branch, "
        "tag or commit after '@', or none for main")
    fake_hub.add("org/bare", {"model.safetensors": b"x"})
    with pytest.raises(ValueError, match=re.escape(
            "hf://org/bare has no config.json, so it is not a transformers or timm checkpoint")):
        hub.locate("hf://org/bare")
    fake_hub.add("org/no-weights", {"config.json": b"{}", "tf_model.h5": b"x"})
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/no-weights")
    assert str(error.value) == (
        "hf://org/no-weights has neither model.safetensors nor model.safetensors.index.json (its "
        "files: config.json, tf_model.h5)")


def test_hub_pickles_are_refused_undownloaded(written, fake_hub):
    commit = fake_hub.add("org/pickled", _folder_files(written / "timm_pickle"))
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/pickled")
    assert str(error.value) == (
        "hf://org/pickled holds only pickled weights (pytorch_model.bin). " + PICKLE_REFUSAL)
    assert ("GET", f"/api/models/org/pickled/revision/{commit}") in fake_hub.hub_requests()
    assert not any("pytorch_model.bin" in p for m, p in fake_hub.hub_requests())


def test_hub_gated_repository_needs_hf_token(written, fake_hub, monkeypatch):
    fake_hub.add("org/gated", _folder_files(written / "single"), token="hf_loopback")
    with pytest.raises(ValueError) as error:
        hub.locate("hf://org/gated")
    assert str(error.value) == (
        "hf://org/gated is a gated repository: accept its conditions on its Hub page, then set "
        "HF_TOKEN to an access token of that account (or log in with huggingface_hub.login())")
    # huggingface_hub reads HF_TOKEN at each call, unlike the variables of the fixture.
    monkeypatch.setenv("HF_TOKEN", "hf_loopback")
    fake_hub.authorizations.clear()
    assert hub.locate("hf://org/gated").config["hidden_size"] == 32
    assert {a for p, a in fake_hub.authorizations if "/resolve/" in p} == {"Bearer hf_loopback"}


def test_hub_unreachable(fake_hub, no_backoff):
    fake_hub.close()  # nothing listens on its port any more
    with pytest.raises(ValueError, match=(
            rf"^hf://org/vit: the Hub at {re.escape(fake_hub.endpoint)} could not be reached "
            r"\(.+\) and config.json is not in the Hugging Face cache \(" +
            re.escape(str(fake_hub.cache)) + r"\); check the network \(and HF_ENDPOINT\), or run "
            "once where the Hub is reachable$")):
        hub.locate("hf://org/vit")


def test_hub_download_cut_short(written, fake_hub, no_backoff):
    commit = fake_hub.add("org/vit", _folder_files(written / "single"))
    fake_hub.truncate.add(f"/org/vit/resolve/{commit}/model.safetensors")
    with pytest.raises(ValueError, match=(
            r"^hf://org/vit: downloading model.safetensors failed \(.+\); nothing was cached, "
            "try again$")):
        hub.locate("hf://org/vit")
    assert not (_snapshot(fake_hub, "org/vit", commit) / "model.safetensors").exists()
    fake_hub.truncate.clear()
    assert hub.locate("hf://org/vit").weight_files == (
        str(_snapshot(fake_hub, "org/vit", commit) / "model.safetensors"),)


# huggingface_hub copies HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so only
# a fresh interpreter shows that the variables themselves reach it. keras_vit/hub.py is loaded by
# path: importing the keras_vit package would import Keras and a backend, seconds per run.
_LOCATE_IN_A_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("keras_vit_hub", sys.argv[1])
hub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hub)
files = hub.locate(sys.argv[2])
print(json.dumps([files.root, list(files.weight_files)]))
"""


def test_hub_environment_variables_in_a_fresh_process(written, fake_hub):
    commit = fake_hub.add("org/vit", _folder_files(written / "single"), token="hf_child")
    env = dict(os.environ, HF_TOKEN="hf_child", HF_HUB_DISABLE_PROGRESS_BARS="1")
    command = [sys.executable, "-c", _LOCATE_IN_A_CHILD, hub.__file__, "hf://org/vit"]
    snapshot = str(_snapshot(fake_hub, "org/vit", commit))
    expected = [snapshot, [os.path.join(snapshot, "model.safetensors")]]

    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == expected
    assert [p for m, p in fake_hub.hub_requests() if m == "GET"] == [
        "/org/vit/resolve/main/config.json",
        f"/org/vit/resolve/{commit}/preprocessor_config.json",
        f"/org/vit/resolve/{commit}/model.safetensors"]
    assert {a for p, a in fake_hub.authorizations if "/resolve/" in p} == {"Bearer hf_child"}

    fake_hub.requests.clear()
    env["HF_HUB_OFFLINE"] = "1"
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == expected
    assert fake_hub.requests == []
