"""A loopback stand-in for the Hugging Face Hub, and fixtures that point huggingface_hub at it.

Used by tests/hub_test.py (the files) and tests/converters_test.py (whole models by `hf://`).
Nothing leaves the machine: `never_the_real_hub` starts each test offline with an endpoint on
127.0.0.1 that nothing serves, and `fake_hub` replaces it with a server on 127.0.0.1.
"""

import hashlib
import http.server
import json
import threading
import time
import urllib.parse

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub", reason="the hub extra")


@pytest.fixture(autouse=True)
def never_the_real_hub(monkeypatch):
    # Whatever a test gets wrong, huggingface_hub must not reach out of this machine: it starts
    # offline, with an endpoint on 127.0.0.1 that nothing serves; `fake_hub` replaces both.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")


class FakeHub:
    """The Hub's download API as huggingface_hub calls it, for repositories held in memory.

    `HEAD`/`GET /{repo}/resolve/{revision}/{file}` answer with the headers hf_hub_download
    needs (X-Repo-Commit, ETag, Content-Length) and the Hub's X-Error-Code on a 404 or 401;
    `GET /api/models/{repo}/revision/{revision}` lists the files (model_info's siblings).
    Every request is recorded in `requests` as (method, path), and in `authorizations` as
    (path, Authorization header). Paths in `truncate` send their full Content-Length but half
    the body.
    """

    def __init__(self):
        self.repos, self.requests, self.authorizations, self.truncate = {}, [], [], set()
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 (the http.server API)
                state._answer(self, body=False)

            def do_GET(self):  # noqa: N802
                state._answer(self, body=True)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id, files, *, revision="main", token=None):
        """Commits `files` ({name: bytes}) to `revision` of `repo_id`; returns the commit."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}, "token": token})
        repo["refs"][revision] = commit
        repo["commits"][commit] = dict(files)
        return commit

    def hub_requests(self):
        # huggingface_hub >= 2 also asks the endpoint once per process for its list of AI agent
        # names (for its User-Agent); only the repository requests are the ones locate makes.
        return [(m, p) for m, p in self.requests
                if "/resolve/" in p or p.startswith("/api/models/")]

    def close(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()

    def _answer(self, handler, body):
        path = urllib.parse.urlsplit(handler.path).path
        self.requests.append((handler.command, path))
        self.authorizations.append((path, handler.headers.get("Authorization")))
        if path.startswith("/api/models/"):
            repo_id, _, revision = path[len("/api/models/"):].partition("/revision/")
            filename = None
        else:
            repo_id, _, rest = path[1:].partition("/resolve/")
            revision, _, filename = rest.partition("/")
            if not filename:
                return self._send(handler, 404, {}, b"")
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._send(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"")
        if repo["token"] and handler.headers.get("Authorization") != f"Bearer {repo['token']}":
            return self._send(handler, 401, {"X-Error-Code": "GatedRepo"}, b"")
        revision = urllib.parse.unquote(revision)
        commit = repo["refs"].get(revision, revision)
        if commit not in repo["commits"]:
            return self._send(handler, 404, {"X-Error-Code": "RevisionNotFound"}, b"")
        files = repo["commits"][commit]
        if filename is None:
            listing = {"id": repo_id, "sha": commit,
                       "siblings": [{"rfilename": name} for name in sorted(files)]}
            return self._send(handler, 200, {"Content-Type": "application/json"},
                              json.dumps(listing).encode(), body)
        filename = urllib.parse.unquote(filename)
        if filename not in files:
            return self._send(handler, 404, {"X-Error-Code": "EntryNotFound",
                                             "X-Repo-Commit": commit}, b"")
        data = files[filename]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if path in self.truncate:
            data = data[: len(data) // 2]
            headers["Content-Length"] = str(len(files[filename]))
        self._send(handler, 200, headers, data, body)

    @staticmethod
    def _send(handler, status, headers, data, body=True):
        handler.send_response(status)
        headers.setdefault("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)
        if status != 200 or len(data) != int(headers["Content-Length"]):
            handler.close_connection = True


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A `FakeHub` on 127.0.0.1 that huggingface_hub uses as its endpoint, with an empty cache.

    The variables are set for child processes; huggingface_hub copied them into
    `huggingface_hub.constants` when first imported, so those copies are set too.
    """
    server = FakeHub()
    cache, home = tmp_path / "hf_cache", tmp_path / "hf_home"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(home))
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # not the user's login
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server.cache = cache
    yield server
    server.close()


@pytest.fixture
def no_backoff(monkeypatch):
    # huggingface_hub retries unreachable hosts 5 times with 1-8 s pauses (23 s in all).
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def go_offline(monkeypatch):
    """HF_HUB_OFFLINE=1, as huggingface_hub would have read it at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
