"""Weight files by URL, downloaded once into the Keras cache and never trusted half-written.

`fetch(url)` returns a local path: a file of the mirror directory `$KERAS_VIT_WEIGHTS_DIR` when
it holds one of that name, else the cached copy in `$KERAS_HOME/keras_vit/` (`~/.keras` by
default, as for every Keras download), else it downloads the file there first.

The cache key is the whole URL: a file is cached as `HASH-NAME`, HASH the first 16 hex digits
of the URL's sha256 and NAME its file name, so two URLs that end in the same name (another
host, port, path or query) never share a file. Files cached before this scheme (under NAME
alone) may hold any URL's bytes: one is used only when the caller gives the sha256 it must have
and it matches, and is otherwise ignored (left in place, never deleted: it may be a file put
there by hand for an older version).

Keras' own `keras.utils.get_file` writes the target in place, so a process killed mid-download
leaves a partial file that the next call trusts when no hash is known. Here a download goes to a
temporary name beside the target (`keras_vit.files.atomic_write`) and is renamed only once it is
complete and checked:

- its length equals the server's Content-Length, and the expected size when one is known;
- its sha256 equals the expected one, when known;
- a `.npz`, `.keras` or `.zip` opens as a zip archive, a `.h5` starts with the HDF5 signature.

A failed check is a `ValueError` naming the URL and what was wrong, and leaves nothing in the
cache. A download that runs past its deadline (`$KERAS_VIT_DOWNLOAD_TIMEOUT` seconds, 7200 by
default) or whose rate over any `RATE_WINDOW_SECONDS` (60) falls below
`$KERAS_VIT_MIN_DOWNLOAD_RATE` bytes per second (10000 by default) is stopped with a
`ValueError` naming the URL, the bytes received and the variable to change; 0 turns either
check off. These two apply to http(s) downloads, not to `gs://` copies.

Without network the error names the URL, the cache path where the file can be put by hand, and
the mirror variable. `gs://` URLs are read through `tf.io.gfile` when TensorFlow is
installed.
"""

import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import keras

from keras_vit.files import atomic_write, remove_stale_temporaries

MIRROR_ENV = "KERAS_VIT_WEIGHTS_DIR"
TIMEOUT_ENV = "KERAS_VIT_DOWNLOAD_TIMEOUT"
MIN_RATE_ENV = "KERAS_VIT_MIN_DOWNLOAD_RATE"
DEFAULT_TIMEOUT_SECONDS = 7200.0
DEFAULT_MIN_RATE = 10_000.0
# The rate is measured over windows of this many seconds: long enough that a short pause of the
# server is not a failure, short enough that a trickle is found within a minute.
RATE_WINDOW_SECONDS = 60.0
CACHE_SUBDIR = "keras_vit"
_CHUNK = 1 << 20
# A single read waits at most this long (or less, when the deadline or rate window is shorter).
_READ_TIMEOUT_SECONDS = 60
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


def fetch(url, *, sha256=None, size_bytes=None, progress=True, timeout=None, min_rate=None):
    """Returns a local path holding the file at `url`, downloading it at most once.

    Args:
        url: str. An http://, https:// or gs:// URL.
        sha256: str or None. Expected hex digest; checked after each download and on files of
            the mirror directory.
        size_bytes: int or None. Expected size in bytes.
        progress: bool. Show Keras' progress bar while downloading. Defaults to True.
        timeout: float or None. Seconds the whole download may take; 0 for no limit. Defaults
            to `$KERAS_VIT_DOWNLOAD_TIMEOUT`, else 7200.
        min_rate: float or None. Bytes per second the download must keep over each window of
            `RATE_WINDOW_SECONDS`; 0 for no limit. Defaults to `$KERAS_VIT_MIN_DOWNLOAD_RATE`,
            else 10000.

    Returns:
        str: the path of the file (in the mirror directory or the cache).

    Raises:
        ValueError: the URL cannot be read (the message says where to put the file by hand), or
            the file is truncated, has the wrong hash, or is not the format its name says, or
            the download ran past its deadline or below its minimum rate.

    Example:

    ```python
    path = fetch("https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz")
    ```
    """
    if not is_url(url):
        raise ValueError(f"{url!r} is not an http://, https:// or gs:// URL")
    name = file_name(url)
    limits = _Limits(
        _setting(timeout, TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS, "timeout"),
        _setting(min_rate, MIN_RATE_ENV, DEFAULT_MIN_RATE, "min_rate"))
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
    legacy = os.path.join(cache_dir(), name)
    if sha256 is not None and os.path.isfile(legacy) and not _check(
            legacy, sha256=sha256, size_bytes=size_bytes):
        # Cached by an older version under its file name alone: the hash proves which file it is.
        return legacy
    # The cache may be shared by machines (a home on NFS): a temporary is another machine's
    # download in progress until it has not grown for an hour.
    remove_stale_temporaries(cache_dir(), older_than=3600)
    with atomic_write(target) as temporary:
        if url.startswith("gs://"):
            _copy_from_gcs(url, temporary, target)
            expected_length = None
        else:
            expected_length = _download(url, temporary, target, progress, limits)
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

    The file name is prefixed by a hash of the whole URL, so URLs ending in the same name
    are cached apart.

    Example:

    >>> os.path.relpath(cache_path("https://example.com/vit%20models/B_16.npz"), cache_dir())
    'b9f12872d01af2d9-B_16.npz'
    """
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_dir(), f"{key}-{file_name(url)}")


class _Limits:
    """A download's deadline and minimum rate (0: none), checked after each read."""

    def __init__(self, timeout, min_rate):
        self.timeout, self.min_rate = timeout, min_rate
        self.start = self.window_start = time.monotonic()
        self.window_bytes = 0

    def read_timeout(self):
        limits = [_READ_TIMEOUT_SECONDS]
        if self.timeout:
            limits.append(self.timeout)
        if self.min_rate:
            limits.append(RATE_WINDOW_SECONDS)
        return min(limits)

    def problem(self, done):
        """What is wrong after `done` bytes: the deadline passed or the rate fell; or None."""
        now = time.monotonic()
        if self.timeout and now - self.start >= self.timeout:
            return (f"it did not finish within {self.timeout:g} s (${TIMEOUT_ENV}, or fetch's "
                    "timeout=; 0 for no limit)")
        elapsed = now - self.window_start
        if self.min_rate and elapsed >= RATE_WINDOW_SECONDS:
            rate = (done - self.window_bytes) / elapsed
            if rate < self.min_rate:
                return (f"it received {rate:.1f} bytes/s over {elapsed:.0f} s, below the minimum "
                        f"of {self.min_rate:g} (${MIN_RATE_ENV}, or fetch's min_rate=; 0 for no "
                        "limit)")
            self.window_start, self.window_bytes = now, done
        return None


def _setting(value, env, default, argument):
    """A limit from the keyword argument, else the environment variable, else the default."""
    source = f"{argument}="
    if value is None:
        value, source = os.environ.get(env), f"${env}"
        if value is None or value == "":
            return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{source} must be a number of 0 or more (0: no limit), received "
                         f"{value!r}")
    return number


def _download(url, temporary, target, progress, limits):
    """Streams `url` into `temporary`; returns the server's Content-Length (or None)."""
    request = urllib.request.Request(url, headers={"User-Agent": "keras_vit"})
    try:
        response = urllib.request.urlopen(request, timeout=limits.read_timeout())
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(_unreachable(url, target, exc)) from None
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = f" of {length}" if length is not None else ""
        bar = keras.utils.Progbar(length, unit_name="byte") if progress else None
        done = 0
        with open(temporary, "wb") as f:
            while True:
                try:
                    # read1: what one receive brings, so the byte count and the limits are
                    # current even when the server trickles (read(n) waits for all n bytes).
                    chunk = response.read1(_CHUNK)
                except (urllib.error.URLError, OSError) as exc:
                    # A connection cut mid-body (http.client.IncompleteRead is an OSError too),
                    # or a read that timed out.
                    problem = limits.problem(done)
                    reason = f": {problem}" if problem else f" ({exc})"
                    raise ValueError(
                        f"download of {url} failed after {done}{total} bytes{reason}; nothing "
                        "was cached, try again") from None
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(done)
                problem = limits.problem(done)
                if problem:
                    raise ValueError(
                        f"download of {url} stopped after {done}{total} bytes: {problem}; "
                        "nothing was cached")
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
