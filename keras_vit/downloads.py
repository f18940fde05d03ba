"""Weight files by URL, downloaded once into the Keras cache and never trusted half-written.

`fetch(url)` returns a local path: a file of the mirror directory `$KERAS_VIT_WEIGHTS_DIR` when
it holds one of that name, else the cached copy in `$KERAS_HOME/keras_vit/` (`~/.keras` by
default, as for every Keras download), else it downloads the file there first.

Keras' own `keras.utils.get_file` writes the target in place, so a process killed mid-download
leaves a partial file that the next call trusts when no hash is known. Here a download goes to a
temporary name beside the target (`keras_vit.files.atomic_write`) and is renamed only once it is
complete and checked:

- its length equals the server's Content-Length, and the expected size when one is known;
- its sha256 equals the expected one, when known;
- a `.npz`, `.keras` or `.zip` opens as a zip archive, a `.h5` starts with the HDF5 signature.

A failed check is a `ValueError` naming the URL and what was wrong, and leaves nothing in the
cache. Without network the error names the URL, the cache path where the file can be put by
hand, and the mirror variable. `gs://` URLs are read through `tf.io.gfile` when TensorFlow is
installed.
"""

import glob
import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import keras

from keras_vit.files import atomic_write

MIRROR_ENV = "KERAS_VIT_WEIGHTS_DIR"
CACHE_SUBDIR = "keras_vit"
_CHUNK = 1 << 20
_TIMEOUT_SECONDS = 60
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_url(value):
    """bool: whether `value` is an http(s):// or gs:// URL string."""
    return isinstance(value, str) and value.split("://", 1)[0] in ("http", "https", "gs")


def cache_dir():
    """The directory downloads are cached in: `$KERAS_HOME/keras_vit` (`~/.keras/keras_vit`)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, CACHE_SUBDIR)


def file_name(url):
    """The file name a URL's file is cached under: the last part of its path, unquoted."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", ".."):
        raise ValueError(f"URL {url!r} does not end in a file name")
    return name


def fetch(url, *, sha256=None, size_bytes=None, progress=True):
    """Returns a local path holding the file at `url`, downloading it at most once.

    Args:
        url: str. An http://, https:// or gs:// URL.
        sha256: str or None. Expected hex digest; checked after each download and on files of
            the mirror directory.
        size_bytes: int or None. Expected size in bytes.
        progress: bool. Show Keras' progress bar while downloading. Defaults to True.

    Returns:
        str: the path of the file (in the mirror directory or the cache).

    Raises:
        ValueError: the URL cannot be read (the message says where to put the file by hand), or
            the file is truncated, has the wrong hash, or is not the format its name says.

    Example:

    ```python
    path = fetch("https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz")
    ```
    """
    if not is_url(url):
        raise ValueError(f"{url!r} is not an http://, https:// or gs:// URL")
    name = file_name(url)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and os.path.isfile(os.path.join(mirror, name)):
        path = os.path.join(mirror, name)
        problem = _check(path, sha256=sha256, size_bytes=size_bytes)
        if problem:
            raise ValueError(f"{path} (from ${MIRROR_ENV}) is not the file of {url}: {problem}")
        return path
    target = cache_path(url)
    if os.path.isfile(target):
        # Only complete, checked downloads are ever renamed to this name.
        if size_bytes is None or os.path.getsize(target) == size_bytes:
            return target
    _remove_stale_temporaries(target)
    with atomic_write(target) as temporary:
        if url.startswith("gs://"):
            _copy_from_gcs(url, temporary, target)
            expected_length = None
        else:
            expected_length = _download(url, temporary, target, progress)
        received = os.path.getsize(temporary)
        if expected_length is not None and received != expected_length:
            raise ValueError(
                f"download of {url} is truncated: received {received} of {expected_length} "
                "bytes; nothing was cached, try again")
        problem = _check(temporary, sha256=sha256, size_bytes=size_bytes, name=name)
        if problem:
            raise ValueError(f"download of {url} was refused: {problem}; nothing was cached")
    return target


def cache_path(url):
    """The path where `fetch` caches (and a user may place by hand) the file of `url`.

    Example:

    >>> os.path.relpath(cache_path("https://example.com/vit%20models/B_16.npz"), cache_dir())
    'B_16.npz'
    """
    return os.path.join(cache_dir(), file_name(url))


def _download(url, temporary, target, progress):
    """Streams `url` into `temporary`; returns the server's Content-Length (or None)."""
    request = urllib.request.Request(url, headers={"User-Agent": "keras_vit"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS)
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(_unreachable(url, target, exc)) from None
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        bar = keras.utils.Progbar(length, unit_name="byte") if progress else None
        done = 0
        try:
            with open(temporary, "wb") as f:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if bar is not None:
                        bar.update(done)
        except (urllib.error.URLError, OSError) as exc:
            # A connection cut mid-body (http.client.IncompleteRead is an OSError too).
            total = f" of {length}" if length is not None else ""
            raise ValueError(
                f"download of {url} failed after {done}{total} bytes ({exc}); nothing was "
                "cached, try again") from None
    return length


def _copy_from_gcs(url, temporary, target):
    try:
        import tensorflow as tf
    except ImportError:
        raise ValueError(
            f"{url} is a gs:// URL, which needs TensorFlow (tf.io.gfile); install it, or "
            f"place the file at {target} or in ${MIRROR_ENV}") from None
    try:
        tf.io.gfile.copy(url, temporary, overwrite=True)
    except tf.errors.OpError as exc:
        raise ValueError(_unreachable(url, target, exc)) from None


def _unreachable(url, target, exc):
    return (
        f"could not download {url} ({exc}). Without network, put the file at {target}, or in "
        f"a directory named by ${MIRROR_ENV} (files by name, for air-gapped clusters)")


def _check(path, *, sha256=None, size_bytes=None, name=None):
    """Returns what is wrong with the file at `path`, or None."""
    size = os.path.getsize(path)
    if size_bytes is not None and size != size_bytes:
        return f"it has {size} bytes, expected {size_bytes}"
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            return f"its sha256 is {digest.hexdigest()}, expected {sha256.lower()}"
    name = name or os.path.basename(path)
    if name.endswith((".npz", ".keras", ".zip")):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"it does not open as a zip archive ({exc})"
    elif name.endswith(".h5"):
        with open(path, "rb") as f:
            if f.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
                return "it is not an HDF5 file"
    return None


def _remove_stale_temporaries(target):
    # Temporaries of downloads whose process died (SIGKILL skips atomic_write's clean-up):
    # ".STEM.PID.tmp.SUFFIX" beside the target. Never trusted; removed to free the disk.
    parent, name = os.path.split(target)
    stem, dot, suffix = name.partition(".")
    pattern = os.path.join(parent, f".{glob.escape(stem)}.*.tmp" + (f".{suffix}" if dot else ""))
    for path in glob.glob(pattern):
        pid = os.path.basename(path)[len(stem) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def _alive(pid):
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
