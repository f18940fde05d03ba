"""Tests of keras_vit/downloads.py against a loopback HTTP server started by the test."""

import hashlib
import os
import socket

import pytest

from keras_vit import downloads

# Every test downloads into an empty Keras cache of its own (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("keras_home")


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
    assert path == str(keras_home / "keras_vit" / "mu4.npz")
    assert open(path, "rb").read() == npz_bytes
    assert server.hits == {"/w/mu4.npz": 1}
    assert downloads.fetch(url, progress=False) == path
    assert server.hits == {"/w/mu4.npz": 1}
    assert _cache_listing(keras_home) == ["mu4.npz"]


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
    assert str(keras_home / "keras_vit" / "B_16.npz") in message
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
    stale = cache / ".x.999999999.tmp.npz"
    stale.write_bytes(npz_bytes[:100])
    server.files["/x.npz"] = npz_bytes
    downloads.fetch(server.url("/x.npz"), progress=False)
    assert _cache_listing(keras_home) == ["x.npz"]
    # A file placed by hand at the cache path is used without a request.
    (cache / "hand.npz").write_bytes(npz_bytes)
    assert downloads.fetch(server.url("/hand.npz"), progress=False) == str(cache / "hand.npz")
    assert "/hand.npz" not in server.hits


@pytest.mark.parametrize("url, message", [
    ("ftp://host/w.npz", "'ftp://host/w.npz' is not an http://, https:// or gs:// URL"),
    ("https://host/", "URL 'https://host/' does not end in a file name"),
])
def test_bad_urls(url, message):
    with pytest.raises(ValueError) as error:
        downloads.fetch(url)
    assert str(error.value) == message
