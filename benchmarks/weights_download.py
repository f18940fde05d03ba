"""Download, load and predict times of a B/16-sized checkpoint, served from 127.0.0.1.

    KERAS_BACKEND=tensorflow python benchmarks/weights_download.py --repeats=3

A ViT-B/16 (224, 1000 classes, 86.6M parameters) with random weights is written by `save_npz`
(the size of a released B/16 ImageNet checkpoint), served by a loopback HTTP server, and
loaded with `keras_vit.ViT(weights=URL)`:

- first load: download into an empty Keras cache, check, rename, then build and fill the model
  (MB/s of the whole, and of the download alone via `keras_vit.downloads.fetch`);
- cached load: the same call again (no request; the server counts them);
- `python -m training.predict --weights=FILE.npz IMAGE`: wall time of the whole command for one
  224x224 image (scikit-learn's china.jpg), process start included.

Each figure is the median of `--repeats` runs. The loopback server is not a network: the
download figure is the cost of keras_vit's own path (stream, hash-free checks, rename), not of
a real link.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import http.server  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import checkpoints, downloads  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per figure; the median is reported.")
_VARIANT = flags.DEFINE_string("variant", "B/16", "keras_vit variant of the checkpoint.")
_PREDICT = flags.DEFINE_bool("predict", True, "Also time python -m training.predict.")


def _serve(directory):
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def do_GET(self):  # noqa: N802 (the http.server API)
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, hits


def main(argv):
    del argv
    work = tempfile.mkdtemp(prefix="keras_vit_weights_bench_")
    try:
        served = os.path.join(work, "served")
        os.makedirs(served)
        model = keras_vit.ViT(_VARIANT.value, image_size=224, num_classes=1000)
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(scale=0.02, size=w.shape).astype("float32")
                           for w in model.get_weights()])
        path = os.path.join(served, "vit_b16_bench.npz")
        checkpoints.save_npz(model, path)
        megabytes = os.path.getsize(path) / 1e6
        httpd, hits = _serve(served)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/vit_b16_bench.npz"
        print(f"backend={keras.backend.backend()} variant={_VARIANT.value} "
              f"params={model.count_params():,} file={megabytes:.1f} MB repeats={_REPEATS.value}")
        fetch_s, first_s, cached_s = [], [], []
        for repeat in range(_REPEATS.value):
            os.environ["KERAS_HOME"] = os.path.join(work, f"home_fetch_{repeat}")
            tick = time.perf_counter()
            downloads.fetch(url, progress=False)
            fetch_s.append(time.perf_counter() - tick)
            os.environ["KERAS_HOME"] = os.path.join(work, f"home_{repeat}")
            tick = time.perf_counter()
            keras_vit.ViT(_VARIANT.value, weights=url)
            first_s.append(time.perf_counter() - tick)
            before = len(hits)
            tick = time.perf_counter()
            keras_vit.ViT(_VARIANT.value, weights=url)
            cached_s.append(time.perf_counter() - tick)
            assert len(hits) == before, "the cached load made a request"
        fetch, first, cached = map(statistics.median, (fetch_s, first_s, cached_s))
        print(f"download only (fetch)        {fetch:6.2f} s  {megabytes / fetch:7.1f} MB/s  "
              f"runs {_fmt(fetch_s)}")
        print(f"first ViT(weights=URL)       {first:6.2f} s  {megabytes / first:7.1f} MB/s  "
              f"runs {_fmt(first_s)}")
        print(f"cached ViT(weights=URL)      {cached:6.2f} s  (no request)   runs {_fmt(cached_s)}")
        httpd.shutdown()
        if _PREDICT.value:
            import sklearn.datasets

            image = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images",
                                 "china.jpg")
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONPATH=root)
            walls = []
            for _ in range(_REPEATS.value):
                tick = time.perf_counter()
                subprocess.run([sys.executable, "-m", "training.predict", f"--weights={path}",
                                "--labels=imagenet2012", image], check=True, cwd=root, env=env,
                               capture_output=True)
                walls.append(time.perf_counter() - tick)
            print(f"training.predict, 1 image    {statistics.median(walls):6.2f} s  wall, "
                  f"process start included; runs {_fmt(walls)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fmt(values):
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    app.run(main)
