"""Tests of keras_vit/downloads.py against a loopback HTTP server started by the test."""

import hashlib
import http.server
import io
import os
import re
import socket
import threading
import time
import zipfile

import pytest

from keras_vit import downloads

# Every test downloads into an empty Keras cache of its own (tests/conftest.py).
# Files and HTTP only, no Keras backend involved: tests/all_backends.sh runs this file once.
pytestmark = [pytest.mark.usefixtures("keras_home"), pytest.mark.backend_independent]


@pytest.fixture
def npz_bytes(mu4_checkpoint):
    """A real checkpoint's bytes (tests/conftest.py)."""
    return mu4_checkpoint[1]


def _cache_listing(home):
    directory = home / downloads.CACHE_SUBDIR
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_first_call_downloads_second_makes_no_request(server, npz_bytes, keras_home):
    server.files["/w/mu4.npz"] = npz_bytes
    url = server.url("/w/mu4.npz")
    path = downloads.fetch(url, sha256=hashlib.sha256(npz_bytes).hexdigest(),
                           size_bytes=len(npz_bytes), progress=False)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    assert path == downloads.cache_path(url) == str(keras_home / "keras_vit" / f"{key}-mu4.npz")
    assert open(path, "rb").read() == npz_bytes
    assert server.hits == {"/w/mu4.npz": 1}
    assert downloads.fetch(url, progress=False) == path
    assert server.hits == {"/w/mu4.npz": 1}
    assert _cache_listing(keras_home) == [f"{key}-mu4.npz"]


def _zip_bytes(text):
    """A small valid zip archive (so the .npz check passes) holding `text`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.npy", text)
    return buffer.getvalue()


def test_urls_with_the_same_file_name_are_cached_apart(server, keras_home):
    # Another directory, another query, another host name for the same port: each its own file.
    port = server.httpd.server_address[1]
    bodies = {}
    for i, path in enumerate(["/run1/model.npz", "/run2/model.npz", "/run2/model.npz?v=2"]):
        bodies[server.url(path)] = server.files[path] = _zip_bytes(f"weights {i}")
    bodies[f"http://localhost:{port}/run1/model.npz"] = server.files["/run1/model.npz"]
    paths = {url: downloads.fetch(url, progress=False) for url in bodies}
    assert len(set(paths.values())) == 4
    for url, path in paths.items():
        assert open(path, "rb").read() == bodies[url]
        assert os.path.basename(path).endswith("-model.npz")
    assert server.hits == {"/run1/model.npz": 2, "/run2/model.npz": 1, "/run2/model.npz?v=2": 1}
    # A second round is served from the cache.
    assert {url: downloads.fetch(url, progress=False) for url in bodies} == paths
    assert sum(server.hits.values()) == 4


def test_a_file_cached_under_the_old_name_is_used_only_when_its_sha256_is_given(
        server, npz_bytes, keras_home):
    cache = keras_home / "keras_vit"
    cache.mkdir(parents=True)
    # Cached by an older version under the bare file name, from some other URL.
    old = _zip_bytes("another run's weights")
    (cache / "model.npz").write_bytes(old)
    server.files["/new/model.npz"] = npz_bytes
    url = server.url("/new/model.npz")
    # No hash to prove which file it is: ignored (and left alone), the URL is downloaded.
    assert open(downloads.fetch(url, progress=False), "rb").read() == npz_bytes
    assert server.hits == {"/new/model.npz": 1}
    assert (cache / "model.npz").read_bytes() == old
    # With the hash of the old file's bytes it is trusted, without a request.
    other = server.url("/other/model.npz")
    assert downloads.fetch(other, sha256=hashlib.sha256(old).hexdigest(),
                           progress=False) == str(cache / "model.npz")
    assert "/other/model.npz" not in server.hits


def test_a_download_cut_halfway_caches_nothing(server, npz_bytes, keras_home):
    server.files["/cut.npz"] = npz_bytes
    server.truncate.add("/cut.npz")
    url = server.url("/cut.npz")
    with pytest.raises(ValueError) as error:
        downloads.fetch(url, progress=False)
    message = str(error.value)
    assert url in message and "nothing was cached" in message
    assert f"{len(npz_bytes) // 2}" in message and f"{len(npz_bytes)}" in message
    assert _cache_listing(keras_home) == []
    # The next call downloads again (the server now sends everything) and succeeds.
    server.truncate.clear()
    assert open(downloads.fetch(url, progress=False), "rb").read() == npz_bytes
    assert server.hits["/cut.npz"] == 2


def test_a_wrong_hash_is_refused(server, npz_bytes, keras_home):
    server.files["/w.npz"] = npz_bytes
    url = server.url("/w.npz")
    expected = "0" * 64
    actual = hashlib.sha256(npz_bytes).hexdigest()
    with pytest.raises(ValueError, match=rf"download of {url} was refused: its sha256 is "
                                         rf"{actual}, expected {expected}; nothing was cached"):
        downloads.fetch(url, sha256=expected, progress=False)
    assert _cache_listing(keras_home) == []


def test_a_wrong_size_and_a_broken_archive_are_refused(server, npz_bytes, keras_home):
    server.files["/a.npz"] = npz_bytes
    with pytest.raises(ValueError, match=rf"it has {len(npz_bytes)} bytes, expected 12"):
        downloads.fetch(server.url("/a.npz"), size_bytes=12, progress=False)
    # An HTML error page served as 200 under a .npz name: complete, but not a checkpoint.
    server.files["/b.npz"] = b"<html>quota exceeded</html>"
    with pytest.raises(ValueError, match="it does not open as a zip archive"):
        downloads.fetch(server.url("/b.npz"), progress=False)
    assert _cache_listing(keras_home) == []


def test_an_unreachable_url_says_where_to_put_the_file(keras_home):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/vit/B_16.npz"
    with pytest.raises(ValueError) as error:
        downloads.fetch(url, progress=False)
    message = str(error.value)
    assert message.startswith(f"could not download {url} (")
    assert downloads.cache_path(url) in message
    assert downloads.cache_path(url).startswith(str(keras_home / "keras_vit") + os.sep)
    assert "$KERAS_VIT_WEIGHTS_DIR" in message


def test_the_mirror_directory_serves_files_by_name(server, npz_bytes, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "m.npz").write_bytes(npz_bytes)
    monkeypatch.setenv(downloads.MIRROR_ENV, str(mirror))
    url = server.url("/m.npz")
    assert downloads.fetch(url, sha256=hashlib.sha256(npz_bytes).hexdigest()) == str(
        mirror / "m.npz")
    assert server.hits == {}
    with pytest.raises(ValueError, match=r"\(from \$KERAS_VIT_WEIGHTS_DIR\) is not the file of"):
        downloads.fetch(url, sha256="f" * 64)


def test_a_placed_file_is_used_and_stale_temporaries_are_removed(server, npz_bytes, keras_home):
    cache = keras_home / "keras_vit"
    cache.mkdir(parents=True)
    # What a download killed by SIGKILL leaves: a temporary of a process that no longer exists.
    stale = cache / ".0123456789abcdef-x.999999999.tmp.npz"
    stale.write_bytes(npz_bytes[:100])
    os.utime(stale, (time.time() - 7200, time.time() - 7200))  # untouched for two hours
    # A fresh one may be another machine's download in progress (a shared cache): kept.
    fresh = cache / ".0123456789abcdef-y.999999999.tmp.npz"
    fresh.write_bytes(npz_bytes[:100])
    server.files["/x.npz"] = npz_bytes
    downloads.fetch(server.url("/x.npz"), progress=False)
    assert _cache_listing(keras_home) == [fresh.name, os.path.basename(downloads.cache_path(
        server.url("/x.npz")))]
    fresh.unlink()
    # A file placed by hand at the cache path is used without a request.
    placed = downloads.cache_path(server.url("/hand.npz"))
    with open(placed, "wb") as f:
        f.write(npz_bytes)
    assert downloads.fetch(server.url("/hand.npz"), progress=False) == placed
    assert "/hand.npz" not in server.hits


@pytest.mark.parametrize("url, message", [
    ("ftp://host/w.npz", "'ftp://host/w.npz' is not an http://, https:// or gs:// URL"),
    ("https://host/", "URL 'https://host/' does not end in a file name"),
])
def test_bad_urls(url, message):
    with pytest.raises(ValueError) as error:
        downloads.fetch(url)
    assert str(error.value) == message


class _SlowServer:
    """Sends a 2000-byte body on 127.0.0.1: `first` bytes at once, then one byte each `every`
    seconds (None: nothing more, the connection held open)."""

    def __init__(self, first, every):
        self.stop = threading.Event()
        stop = self.stop

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                self.send_response(200)
                self.send_header("Content-Length", "2000")
                self.end_headers()
                try:
                    self.wfile.write(b"x" * first)
                    self.wfile.flush()
                    while not stop.wait(every if every is not None else 0.05):
                        if every is not None:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.npz"

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_server():
    servers = []
    yield lambda first, every: servers.append(_SlowServer(first, every)) or servers[-1]
    for s in servers:
        s.close()


def test_a_stalled_download_fails_at_its_deadline_naming_the_bytes_received(
        slow_server, keras_home):
    # 1000 of 2000 bytes arrive, then nothing: the deadline ends the wait (the old message said
    # "after 0 bytes" here, read(n) having waited for all n).
    url = slow_server(1000, None).url
    with pytest.raises(ValueError) as error:
        downloads.fetch(url, progress=False, timeout=0.5, min_rate=0)
    assert str(error.value) == (
        f"download of {url} failed after 1000 of 2000 bytes: it did not finish within 0.5 s "
        "($KERAS_VIT_DOWNLOAD_TIMEOUT, or fetch's timeout=; 0 for no limit); nothing was "
        "cached, try again")
    assert _cache_listing(keras_home) == []


def test_a_trickling_download_fails_at_its_deadline(slow_server, keras_home, monkeypatch):
    url = slow_server(10, 0.02).url  # about 50 bytes/s: the 2000 bytes would take 40 s
    monkeypatch.setenv(downloads.TIMEOUT_ENV, "0.5")
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        downloads.fetch(url, progress=False, min_rate=0)
    match = re.fullmatch(
        rf"download of {re.escape(url)} stopped after (\d+) of 2000 bytes: it did not finish "
        r"within 0.5 s \(\$KERAS_VIT_DOWNLOAD_TIMEOUT, or fetch's timeout=; 0 for no limit\); "
        "nothing was cached", str(error.value))
    assert match and 10 < int(match.group(1)) < 2000, str(error.value)
    assert time.monotonic() - start < 30  # not the 40 s the whole body would take
    assert _cache_listing(keras_home) == []


def test_a_trickling_download_fails_below_the_minimum_rate(slow_server, keras_home, monkeypatch):
    url = slow_server(10, 0.02).url
    monkeypatch.setattr(downloads, "RATE_WINDOW_SECONDS", 0.4)
    monkeypatch.setenv(downloads.MIN_RATE_ENV, "1000")
    with pytest.raises(ValueError) as error:
        downloads.fetch(url, progress=False)
    match = re.fullmatch(
        rf"download of {re.escape(url)} stopped after (\d+) of 2000 bytes: it received ([\d.]+) "
        r"bytes/s over 0 s, below the minimum of 1000 \(\$KERAS_VIT_MIN_DOWNLOAD_RATE, or "
        r"fetch's min_rate=; 0 for no limit\); nothing was cached", str(error.value))
    assert match and float(match.group(2)) < 1000, str(error.value)
    assert _cache_listing(keras_home) == []


@pytest.mark.parametrize("env, value, message", [
    ("KERAS_VIT_DOWNLOAD_TIMEOUT", "soon",
     "$KERAS_VIT_DOWNLOAD_TIMEOUT must be a number of 0 or more (0: no limit), received 'soon'"),
    ("KERAS_VIT_MIN_DOWNLOAD_RATE", "-1",
     "$KERAS_VIT_MIN_DOWNLOAD_RATE must be a number of 0 or more (0: no limit), received '-1'"),
])
def test_bad_limits_are_refused_before_any_request(server, env, value, message, monkeypatch):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError) as error:
        downloads.fetch(server.url("/w.npz"))
    assert str(error.value) == message
    assert server.hits == {}
