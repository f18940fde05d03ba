"""Shared pytest set-up: quiet TensorFlow, seeded randomness, repo paths, a loopback server."""

import http.server
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch 2.14's Linux wheel (the one whose torchvision timm needs, tests/converters_test.py)
# brings triton, its GPU kernel compiler; importing triton after TensorFlow crashes the process
# (segmentation fault in triton's native module). torch treats an ImportError as "no triton",
# which is the truth on these CPU-only machines.
sys.modules.setdefault("triton", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tests/all_backends.sh names the one backend whose run keeps the tests marked
# `backend_independent` (file, HTTP and Hub-layout logic that no Keras backend computes); the
# other runs skip them, since a second run could only repeat the first. Unset (a plain pytest
# run), every backend runs them.
_BACKEND_INDEPENDENT_UNDER = os.environ.get("KERAS_VIT_TESTS_BACKEND_INDEPENDENT_UNDER")


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    if _BACKEND_INDEPENDENT_UNDER in (None, "", backend):
        return
    skip = pytest.mark.skip(
        reason=f"backend-independent: run once, under {_BACKEND_INDEPENDENT_UNDER} "
               "(KERAS_VIT_TESTS_BACKEND_INDEPENDENT_UNDER)")
    for item in items:
        if item.get_closest_marker("backend_independent"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Every test starts from the same seeds and the float32 policy."""
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def mu4_checkpoint(tmp_path_factory):
    """(model, .npz bytes): a mu/4 at 16x16 with 3 classes and random non-zero weights (a zero
    head would make every model's logits equal), written by `save_npz` as a released file."""
    import keras_vit
    from keras_vit import checkpoints

    model = keras_vit.ViT("mu/4", image_size=16, num_classes=3)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path_factory.mktemp("npz") / "mu4_16.npz"
    checkpoints.save_npz(model, str(path))
    return model, path.read_bytes()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache ($KERAS_HOME) for the test, and no weights mirror."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KERAS_VIT_WEIGHTS_DIR", raising=False)
    return home


class _Server:
    """Serves `files` ({path: bytes}) on 127.0.0.1; counts the requests of each path.

    Paths in `truncate` send their full Content-Length but only half the body, then close.
    """

    def __init__(self):
        self.files, self.hits, self.truncate = {}, {}, set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (loopback only) serving `server.files`; see `_Server`."""
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def remat_calls(monkeypatch):
    """Counts the functions wrapped in `keras.remat` (one per recomputed block call)."""
    calls = []
    original = keras.remat

    def counting_remat(f):
        calls.append(f)
        return original(f)

    monkeypatch.setattr(keras, "remat", counting_remat)
    return calls
