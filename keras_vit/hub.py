"""The files of a Hugging Face-style checkpoint, found and read as NumPy arrays; no model knowledge.

`locate(weights)` accepts three kinds of reference and returns a `CheckpointFiles`:

- `"hf://ORG/NAME"` or `"hf://ORG/NAME@REVISION"` (a branch, tag, commit or `refs/pr/N`): the
  files are downloaded into, or found in, the Hugging Face cache through `huggingface_hub`
  itself, so its settings apply unchanged: `HF_HOME` / `HF_HUB_CACHE` (where the cache is),
  `HF_TOKEN` (private and gated repositories), `HF_HUB_OFFLINE=1` (cache only, no request) and
  `HF_ENDPOINT` (a mirror). `huggingface_hub` reads all of these except `HF_TOKEN` once, when
  it is imported: set them before the first import.
- A checkpoint folder (one holding `config.json`): the output of transformers'
  `save_pretrained`, of timm's `save_for_hf`, or a downloaded snapshot.
- A single `.safetensors` file, with the `config.json` beside it when there is one.

The weights are `model.safetensors`, or the shards that `model.safetensors.index.json` lists
(transformers writes `model-00001-of-0000N.safetensors` and an index for checkpoints over its
shard size). `read_tensors` reads them with `safetensors`, memory-mapped, as NumPy arrays.

Pickled weights (`pytorch_model.bin`, `*.pth`, `*.pt`, `*.ckpt`) are refused with a
`ValueError` that says how to get safetensors instead: unpickling a file can run any code in
it, and a checkpoint named by a string from the internet must never be able to do that.

`huggingface_hub` and `safetensors` are the optional "hub" extra (`pip install
"keras-vit[hub]"`); they are imported on first use, so this module imports without them.

Example:

>>> is_hub_reference("hf://google/vit-base-patch16-224@main"), is_hub_reference("B_16.npz")
(True, False)
"""

import dataclasses
import importlib
import json
import math
import os
import re
import sys

import numpy as np

HUB_PREFIX = "hf://"
EXTRA = "hub"

_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_CONFIG = "config.json"
_PREPROCESSOR_CONFIG = "preprocessor_config.json"
_REFERENCE_FORM = "hf://ORG/NAME[@REVISION]"
# The Hub's own characters for organization and repository names, and a revision without spaces
# or a second "@": anything else (a space, a third part, an empty part) is a typo best reported
# before any request.
_REPO_PART = re.compile(r"[A-Za-z0-9_.-]+")
_REVISION = re.compile(r"[^\s@]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# torch.save's and Lightning's formats: all pickles. `.bin` is what transformers wrote before
# safetensors (pytorch_model.bin, open_clip_pytorch_model.bin), with a `.bin.index.json` when
# sharded.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".bin.index.json")
# The safetensors dtypes that safetensors' NumPy reader returns, and BF16, which NumPy lacks
# (safetensors refuses it) but bfloat16-trained checkpoints use: read here, widened to float32.
_NUMPY_DTYPES = frozenset(
    ["F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"])
_BFLOAT16 = "BF16"
_HEADER_LENGTH_BYTES = 8


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """The located files of one checkpoint.

    Args:
        name: str. The reference as given: `"hf://ORG/NAME[@REVISION]"`, a folder or a file.
        root: str. The local folder holding the files: the Hugging Face cache's snapshot folder
            of the resolved commit, the checkpoint folder, or the `.safetensors` file's folder.
        config: dict or None. The parsed `config.json`; None only for a bare `.safetensors`
            file with no `config.json` beside it.
        preprocessor_config: dict or None. The parsed `preprocessor_config.json`, if any.
        weight_files: tuple of str. Absolute paths of the `.safetensors` files: one, or the
            shards of `model.safetensors.index.json` in the order the index first names them.
            Empty when located with `config_only=True`.
    """

    name: str
    root: str
    config: dict | None
    preprocessor_config: dict | None
    weight_files: tuple


def is_hub_reference(value):
    """bool: whether `value` is a string naming a Hub repository, `"hf://..."`."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def is_checkpoint_folder(path):
    """bool: whether `path` (str or path-like) is an existing folder holding `config.json`."""
    path = _path_string(path)
    if path is None:
        return False
    path = os.path.expanduser(path)
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, _CONFIG))


def is_reference(value):
    """bool: whether `locate` handles `value`: an `hf://` reference, a checkpoint folder, or a
    path (str or path-like, existing or not) ending in `.safetensors`.

    Example:

    >>> is_reference("hf://timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")
    True
    >>> is_reference("weights/model.safetensors"), is_reference("ViT-B_16.npz")
    (True, False)
    """
    return (
        is_hub_reference(value)
        or is_checkpoint_folder(value)
        or (_path_string(value) or "").endswith(".safetensors")
    )


def locate(weights, *, config_only=False):
    """Finds (downloading when needed) the files of a Hugging Face-style checkpoint.

    Args:
        weights: str or path-like. `"hf://ORG/NAME"` or `"hf://ORG/NAME@REVISION"`, a
            checkpoint folder (holding `config.json` and `model.safetensors` or
            `model.safetensors.index.json`), or a `.safetensors` file.
        config_only: bool. Find and parse only `config.json` and `preprocessor_config.json`;
            no weights are downloaded or checked, and `weight_files` is empty. Defaults to
            False.

    Returns:
        CheckpointFiles: the parsed configs and the paths of the weight files.

    Raises:
        ValueError: a malformed reference; a repository, revision or file that does not exist,
            is gated (the message names `HF_TOKEN`) or cannot be reached and is not cached; a
            checkpoint with only pickled weights; an index that lists a missing shard, or a
            tensor its shard does not hold; a config that is not a JSON object.
        ImportError: an `hf://` reference without `huggingface_hub` installed.
    """
    if is_hub_reference(weights):
        repo_id, revision = _parse_hub_reference(weights)
        return _locate_on_hub(weights, repo_id, revision, config_only)
    name = _path_string(weights)
    if name is None:
        raise ValueError(
            f"weights must be {_REFERENCE_FORM}, a checkpoint folder or a .safetensors file, "
            f"received {weights!r}")
    path = os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(path):
        return _locate_in_folder(name, path, config_only)
    if path.endswith(PICKLE_SUFFIXES):
        raise _pickle_refusal(f"{name} is a pickled checkpoint")
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise ValueError(f"safetensors file {name} does not exist")
        root = os.path.dirname(path)
        return CheckpointFiles(
            name=name,
            root=root,
            config=_read_optional_json(os.path.join(root, _CONFIG)),
            preprocessor_config=_read_optional_json(os.path.join(root, _PREPROCESSOR_CONFIG)),
            weight_files=() if config_only else (path,),
        )
    raise ValueError(
        f"weights must be {_REFERENCE_FORM}, a checkpoint folder or a .safetensors file, "
        f"received {name!r}, which is none of these")


def read_tensors(files):
    """Reads every tensor of `files.weight_files` as a NumPy array.

    The arrays keep their stored dtype, float16 included, except bfloat16, which NumPy lacks:
    those are returned as float32 (exactly: every bfloat16 is a float32).

    Args:
        files: CheckpointFiles. As returned by `locate`.

    Returns:
        dict: tensor name -> `np.ndarray`, in file order.

    Raises:
        ValueError: a damaged or truncated file (named), a tensor stored in two files (both
            named), a dtype NumPy cannot hold, or no weight files (`config_only=True`).
        ImportError: `safetensors` is not installed.
    """
    if not files.weight_files:
        raise ValueError(
            f"{files.name} has no weight files to read (was it located with config_only=True?)")
    safetensors = _import_extra("safetensors", "safetensors weights")
    tensors, source = {}, {}
    for path in files.weight_files:
        header = _read_header(path)
        for key in header:
            if key in source:
                raise ValueError(f"tensor {key!r} is stored twice: in {source[key]} and in {path}")
            source[key] = path
        tensors.update(_read_file(safetensors, path, header))
    return tensors


def import_safetensors_numpy():
    """The `safetensors.numpy` module, for writers of safetensors files.

    Raises:
        ImportError: `safetensors` is not installed; the message names the "hub" extra.
    """
    return _import_extra("safetensors.numpy", "safetensors weights")


# --- References and local files --------------------------------------------------------------


def _parse_hub_reference(value):
    """("ORG/NAME", revision or None) of "hf://ORG/NAME[@REVISION]"."""
    repo_id, at, revision = value[len(HUB_PREFIX):].partition("@")
    parts = repo_id.split("/")
    if (len(parts) != 2 or not all(_REPO_PART.fullmatch(p) for p in parts)
            or (at and not _REVISION.fullmatch(revision))):
        raise ValueError(f"a hub reference must be {_REFERENCE_FORM}, received {value!r}")
    return repo_id, revision or None


def _path_string(value):
    """`value` as a str path when it is a str or a str path-like, else None."""
    if not isinstance(value, (str, os.PathLike)):
        return None
    path = os.fspath(value)
    return path if isinstance(path, str) else None


def _locate_in_folder(name, folder, config_only):
    if not os.path.isfile(os.path.join(folder, _CONFIG)):
        raise ValueError(
            f"{name} is not a checkpoint folder: it has no {_CONFIG} (to read a bare weights "
            "file, pass the path of the .safetensors file itself)")
    files = CheckpointFiles(
        name=name,
        root=folder,
        config=_read_json(os.path.join(folder, _CONFIG)),
        preprocessor_config=_read_optional_json(os.path.join(folder, _PREPROCESSOR_CONFIG)),
        weight_files=(),
    )
    if config_only:
        return files
    if os.path.isfile(os.path.join(folder, _SINGLE)):
        weight_files = (os.path.join(folder, _SINGLE),)
    elif os.path.isfile(os.path.join(folder, _INDEX)):
        index = os.path.join(folder, _INDEX)
        shards, weight_map = _read_index(index)
        for shard in shards:
            if not os.path.isfile(os.path.join(folder, shard)):
                raise ValueError(f"{index} lists the shard {shard}, which is missing from {folder}")
        weight_files = tuple(os.path.join(folder, shard) for shard in shards)
        _check_index(index, weight_map, dict(zip(shards, weight_files)))
    else:
        present = sorted(os.listdir(folder))
        pickled = _only_pickles(present)
        if pickled:
            raise _pickle_refusal(f"checkpoint folder {name} holds only pickled weights", pickled)
        raise ValueError(
            f"checkpoint folder {name} has neither {_SINGLE} nor {_INDEX} (it holds: "
            f"{', '.join(present)})")
    return dataclasses.replace(files, weight_files=weight_files)


def _only_pickles(names):
    """The pickled weight files among `names` when no safetensors file is there too, else []."""
    if any(n.endswith(".safetensors") for n in names):
        return []
    return [n for n in names if n.endswith(PICKLE_SUFFIXES)]


def _pickle_refusal(subject, pickled=()):
    listed = f" ({', '.join(pickled)})" if pickled else ""
    return ValueError(
        f"{subject}{listed}. keras_vit never unpickles weights, because unpickling a file can run "
        "arbitrary code. Ask for a safetensors revision (the Hub's 'refs/pr/N' conversions: "
        "hf://ORG/NAME@refs/pr/N), or convert it yourself with safetensors.torch.save_file in a "
        "trusted environment.")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, received {type(value).__name__}")
    return value


def _read_optional_json(path):
    return _read_json(path) if os.path.isfile(path) else None


def _read_index(index):
    """(shard names in order of first mention, {tensor: shard}) of a safetensors index."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index} has no weight_map of tensor names to shard file names")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        # A shard is a file beside the index; an index from an untrusted repository must not
        # make us read (or download) a path outside it.
        parts = shard.split("/")
        if not shard.endswith(".safetensors") or shard.startswith("/") or ".." in parts:
            raise ValueError(
                f"{index} lists the shard {shard!r}: expected a .safetensors file name beside "
                "the index")
    return shards, weight_map


def _check_index(index, weight_map, paths):
    """Each tensor the index assigns to a shard is in that shard (read from its header)."""
    headers = {shard: _read_header(path) for shard, path in paths.items()}
    for key, shard in weight_map.items():
        if key not in headers[shard]:
            raise ValueError(
                f"{index} lists the tensor {key!r} in {paths[shard]}, which does not hold it")


# --- The Hub ---------------------------------------------------------------------------------


class _Uncached:
    """A file the Hub could not be asked about (offline or unreachable) and the cache lacks."""

    def __init__(self, error):
        self.error = error


def _locate_on_hub(reference, repo_id, revision, config_only):
    hub = _import_extra("huggingface_hub", "hf:// weights")
    config_path = _fetch(hub, reference, repo_id, revision, _CONFIG)
    if config_path is None:
        raise ValueError(
            f"{reference} has no {_CONFIG}, so it is not a transformers or timm checkpoint")
    if isinstance(config_path, _Uncached):
        raise ValueError(_uncached_message(reference, _CONFIG, config_path.error))
    root = os.path.dirname(config_path)
    # hf_hub_download returns HF_HUB_CACHE/models--ORG--NAME/snapshots/COMMIT/config.json: the
    # commit the revision resolved to. The other files are asked for at that commit, so that a
    # push between two requests cannot mix two commits' files, and so that a file already
    # cached costs no request at all (only a commit hash lets hf_hub_download skip its HEAD).
    commit = os.path.basename(root)
    pinned = commit if _COMMIT.fullmatch(commit) else revision
    # Optional: one that is not cached while the Hub cannot be asked reads as absent.
    preprocessor = _fetch(hub, reference, repo_id, pinned, _PREPROCESSOR_CONFIG, optional=True)
    files = CheckpointFiles(
        name=reference,
        root=root,
        config=_read_json(config_path),
        preprocessor_config=_read_json(preprocessor) if isinstance(preprocessor, str) else None,
        weight_files=(),
    )
    if config_only:
        return files
    single = _fetch(hub, reference, repo_id, pinned, _SINGLE, optional=True)
    if isinstance(single, str):
        return dataclasses.replace(files, weight_files=(single,))
    index = _fetch(hub, reference, repo_id, pinned, _INDEX, optional=True)
    if isinstance(index, str):
        shards, weight_map = _read_index(index)
        paths = {}
        for shard in shards:
            path = _fetch(hub, reference, repo_id, pinned, shard)
            if path is None:
                raise ValueError(
                    f"{reference}: {_INDEX} lists the shard {shard}, which the repository "
                    f"does not have at commit {commit}")
            if isinstance(path, _Uncached):
                raise ValueError(_uncached_message(reference, shard, path.error))
            paths[shard] = path
        _check_index(index, weight_map, paths)
        return dataclasses.replace(files, weight_files=tuple(paths.values()))
    for missing in (single, index):
        if isinstance(missing, _Uncached):
            raise ValueError(
                _uncached_message(reference, f"{_SINGLE} (or {_INDEX})", missing.error))
    # Neither file exists. Only now list the repository, to say what it holds instead.
    listing = _list_files(hub, repo_id, pinned)
    if isinstance(listing, Exception):
        raise ValueError(
            f"{reference} has neither {_SINGLE} nor {_INDEX} (its file list could not be "
            f"read: {_first_line(listing)})")
    pickled = _only_pickles(listing)
    if pickled:
        raise _pickle_refusal(f"{reference} holds only pickled weights", pickled)
    raise ValueError(
        f"{reference} has neither {_SINGLE} nor {_INDEX} (its files: {', '.join(listing)})")


def _fetch(hub, reference, repo_id, revision, filename, *, optional=False):
    """The local path of one file of the repository, through the Hugging Face cache.

    Returns None when the Hub says the file does not exist, and an `_Uncached` when the Hub
    cannot be asked (HF_HUB_OFFLINE, no network) and the cache does not hold the file. Every
    other failure is a ValueError naming the reference and what to do.
    """
    utils = importlib.import_module("huggingface_hub.utils")
    if optional and _COMMIT.fullmatch(revision or ""):
        # A file the Hub said was missing at this commit is remembered in the cache
        # (".no_exist/"); hf_hub_download itself would ask again each time.
        if hub.try_to_load_from_cache(repo_id, filename, revision=revision) is _cached_no_exist():
            return None
    try:
        return hub.hf_hub_download(repo_id, filename, revision=revision)
    except utils.LocalEntryNotFoundError as exc:
        return _Uncached(exc)
    except utils.EntryNotFoundError:
        return None
    except utils.GatedRepoError:
        raise ValueError(
            f"{reference} is a gated repository: accept its conditions on its Hub page, then set "
            "HF_TOKEN to an access token of that account (or log in with "
            "huggingface_hub.login())") from None
    except utils.RepositoryNotFoundError:
        raise ValueError(
            f"{reference}: no repository {repo_id} on {_endpoint()}; check the name, or set "
            "HF_TOKEN to a token that may read it if it is private") from None
    except utils.RevisionNotFoundError:
        raise ValueError(
            f"{reference}: the repository {repo_id} has no revision {revision or 'main'!r}; "
            "give an existing branch, tag or commit after '@', or none for main") from None
    except utils.HFValidationError:
        raise ValueError(
            f"a hub reference must be {_REFERENCE_FORM}, received {reference!r}") from None
    except utils.HfHubHTTPError as exc:
        raise ValueError(
            f"{reference}: the Hub at {_endpoint()} refused {filename} "
            f"({_first_line(exc)}); try again later, or check HF_TOKEN") from None
    except _transport_errors() as exc:
        raise ValueError(
            f"{reference}: downloading {filename} failed ({_first_line(exc)}); nothing was "
            "cached, try again") from None


def _uncached_message(reference, what, error):
    cache = _hub_constants().HF_HUB_CACHE
    if _hub_constants().HF_HUB_OFFLINE:
        return (
            f"{reference}: {what} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE "
            "is set, so the Hub is not asked; download it once with network access, or point "
            "HF_HUB_CACHE at a cache that holds it")
    cause = error.__cause__ or error
    return (
        f"{reference}: the Hub at {_endpoint()} could not be reached ({_first_line(cause)}) "
        f"and {what} is not in the Hugging Face cache ({cache}); check the network (and "
        "HF_ENDPOINT), or run once where the Hub is reachable")


def _list_files(hub, repo_id, revision):
    """The repository's file names, or the exception that prevented listing them."""
    try:
        info = hub.HfApi().model_info(repo_id, revision=revision)
    except Exception as exc:  # noqa: BLE001 (only enriches an error message already decided)
        return exc
    return sorted(s.rfilename for s in info.siblings or ())


def _cached_no_exist():
    # try_to_load_from_cache's marker for "known not to exist at this commit"; private by name
    # but documented in its docstring since huggingface_hub 0.11.
    return importlib.import_module("huggingface_hub.file_download")._CACHED_NO_EXIST


def _endpoint():
    return _hub_constants().ENDPOINT


def _hub_constants():
    # Read at each use, never copied: huggingface_hub sets them from the environment when it is
    # imported, and a notebook or a test may change them afterwards.
    return importlib.import_module("huggingface_hub.constants")


def _transport_errors():
    # huggingface_hub has sent its requests with requests (< 1.0), httpx (1.x) and httpx2 (2.x);
    # errors of whichever it imported can escape hf_hub_download mid-download. requests' are
    # OSErrors already.
    errors = [OSError]
    for module, name in (("httpx", "TransportError"), ("httpx2", "TransportError")):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type):
            errors.append(error)
    return tuple(errors)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _import_extra(module, what):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f'{what} need the "{EXTRA}" extra: pip install "keras-vit[{EXTRA}]" '
            "(huggingface_hub and safetensors)") from exc


# --- safetensors -----------------------------------------------------------------------------


def _read_header(path):
    """{tensor: {"dtype", "shape", "data_offsets"}} of a safetensors file, checked against the
    file's size: 8 bytes little-endian header length, the JSON header, then the data."""
    size = os.path.getsize(path)

    def damaged(problem):
        return ValueError(
            f"{path} is damaged or not a safetensors file: {problem}; write or download it again")

    with open(path, "rb") as f:
        prefix = f.read(_HEADER_LENGTH_BYTES)
        if len(prefix) < _HEADER_LENGTH_BYTES:
            raise damaged(f"it has {size} bytes, fewer than the 8 of the header length")
        length = int.from_bytes(prefix, "little")
        if length > size - _HEADER_LENGTH_BYTES:
            raise damaged(
                f"its header length is {length} bytes but only {size - _HEADER_LENGTH_BYTES} "
                "follow (truncated)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise damaged(f"its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    header.pop("__metadata__", None)
    data_bytes = size - _HEADER_LENGTH_BYTES - length
    for key, entry in header.items():
        try:
            begin, end = entry["data_offsets"]
            shape = [int(n) for n in entry["shape"]]
            dtype = str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise damaged(f"its header entry for {key!r} is malformed") from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise damaged(f"tensor {key!r} has invalid data offsets {entry['data_offsets']}")
        if end > data_bytes:
            raise damaged(
                f"tensor {key!r} ends at data byte {end} but the file holds {data_bytes} "
                "(truncated)")
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": (begin, end)}
    return _Header(header, data_start=_HEADER_LENGTH_BYTES + length)


class _Header(dict):
    """A parsed header, {tensor: entry}, and the file offset where the tensors' data starts."""

    def __init__(self, entries, *, data_start):
        super().__init__(entries)
        self.data_start = data_start


def _read_file(safetensors, path, header):
    arrays = {}
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            for key, entry in header.items():
                if entry["dtype"] == _BFLOAT16:
                    arrays[key] = _read_bfloat16(path, header.data_start, entry)
                elif entry["dtype"] in _NUMPY_DTYPES:
                    arrays[key] = f.get_tensor(key)
                else:
                    raise ValueError(
                        f"{path}: tensor {key!r} has dtype {entry['dtype']}, which keras_vit "
                        f"does not read (it reads {', '.join(sorted(_NUMPY_DTYPES))} and "
                        f"{_BFLOAT16})")
    except _safetensors_errors(safetensors) as exc:
        raise ValueError(
            f"{path} is damaged or not a safetensors file: {_first_line(exc)}; write or "
            "download it again") from None
    return arrays


def _read_bfloat16(path, data_start, entry):
    # safetensors' NumPy path refuses BF16 ("data type 'bfloat16' not understood"): read the
    # bytes as ml_dtypes.bfloat16 (installed with Keras) and widen them, exactly, to float32.
    import ml_dtypes

    begin, end = entry["data_offsets"]
    count = math.prod(entry["shape"])
    if end - begin != 2 * count:
        raise ValueError(
            f"{path} is damaged or not a safetensors file: a BF16 tensor of shape "
            f"{tuple(entry['shape'])} needs {2 * count} bytes, its offsets span {end - begin}; "
            "write or download it again")
    values = np.fromfile(path, dtype=ml_dtypes.bfloat16, count=count, offset=data_start + begin)
    return values.reshape(entry["shape"]).astype(np.float32)


def _safetensors_errors(safetensors):
    error = getattr(safetensors, "SafetensorError", None)
    return (OSError, error) if isinstance(error, type) else (OSError,)
