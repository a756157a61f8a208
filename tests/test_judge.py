"""shared.judge: the Ollama client of chapter 7's LLM judge, against real local HTTP servers.

The servers listen on 127.0.0.1 only. ``running_fake_ollama`` is also used by chapter 7's
tests, which run the judge end to end.
"""

import http.server
import json
import socket
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from shared.judge import (
    OLLAMA_MODEL,
    OLLAMA_URL,
    JudgeReplyError,
    JudgeUnavailableError,
    ollama_help,
    ollama_status,
    query_ollama,
)


class _FakeOllama(http.server.BaseHTTPRequestHandler):
    """Speaks enough of Ollama's API: GET /api/tags and POST /api/chat, in several moods."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/api/tags":
            self._reply(404, "not found", "text/plain")
        elif self.server.mode == "not-json":
            self._reply(200, "<html>I am not Ollama</html>", "text/html")
        else:  # Ollama names each model twice, as "name" and "model"
            models = [{"name": "llama3:latest", "model": "llama3:latest", "size": 4661224676}]
            self._reply(200, json.dumps({"models": models}))

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(request)
        mode = self.server.mode
        if mode == "slow":
            self.server.release.wait(30)  # far longer than the client waits; set at teardown
        if mode in ("ok", "slow"):
            message = {
                "model": request["model"],
                "message": {"role": "assistant", "content": "Score: 87"},
                "done": True,
            }
            self._reply(200, json.dumps(message))
        elif mode == "not-json":
            self._reply(200, "<html>I am not Ollama</html>", "text/html")
        elif mode == "missing-fields":
            self._reply(200, json.dumps({"model": "llama3", "created_at": "now"}))
        elif mode == "no-content":
            self._reply(200, json.dumps({"message": {"role": "assistant"}, "done": True}))
        elif mode == "no-number":
            message = {"role": "assistant", "content": "A fine answer!"}
            self._reply(200, json.dumps({"message": message, "done": True}))
        elif mode == "model-missing":
            self._reply(
                404, json.dumps({"error": "model 'llama3' not found, try pulling it first"})
            )


class _Redirect(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect (status ``server.status``) to ``server.target``."""

    def log_message(self, *args):
        pass

    def _redirect(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.server.status)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the timeout test hangs up on purpose
        pass


@contextmanager
def _serving(server):
    """Serve ``server`` from a thread; ``.url`` is its address. Shut down on leaving."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_fake_ollama():
    """A fake Ollama server on a free port of 127.0.0.1; set ``.mode`` to change its replies.

    ``.url`` is its address, ``.requests`` the JSON bodies it received.
    """
    server = _QuietServer(("127.0.0.1", 0), _FakeOllama)
    server.mode, server.requests, server.release = "ok", [], threading.Event()
    with _serving(server):
        try:
            yield server
        finally:
            server.release.set()  # let a request held by a "slow" reply finish first


@contextmanager
def running_redirect(target: str, status: int = 307):
    """A server on a free port of 127.0.0.1 that redirects every request to ``target``."""
    server = _QuietServer(("127.0.0.1", 0), _Redirect)
    server.status, server.target = status, target
    with _serving(server):
        yield server


def closed_port_url():
    """The address of a port of 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake_ollama():
    with running_fake_ollama() as server:
        yield server


def test_the_defaults_are_ollamas():
    assert OLLAMA_URL == "http://localhost:11434" and OLLAMA_MODEL == "llama3"
    assert "ollama serve" in ollama_help() and "ollama pull llama3" in ollama_help()


def test_a_good_reply(fake_ollama):
    ready, message = ollama_status(fake_ollama.url, "llama3", timeout=2)
    assert ready and "ready with 'llama3'" in message
    assert query_ollama("grade this", url=fake_ollama.url, timeout=5, seed=7) == "Score: 87"
    (request,) = fake_ollama.requests
    assert request["model"] == "llama3" and request["stream"] is False
    assert request["messages"] == [{"role": "user", "content": "grade this"}]
    assert request["options"] == {"seed": 7, "temperature": 0, "num_ctx": 2048}


def test_a_model_given_with_its_tag_is_found(fake_ollama):
    assert ollama_status(fake_ollama.url, "llama3:latest", timeout=2)[0]


def test_a_missing_judge_model_is_reported(fake_ollama):
    ready, message = ollama_status(fake_ollama.url, "mistral", timeout=2)
    assert not ready and "has no model 'mistral'" in message and "ollama pull mistral" in message
    assert "(it has: llama3:latest)" in message


def test_a_model_missing_at_chat_time_says_how_to_pull_it(fake_ollama):
    fake_ollama.mode = "model-missing"
    with pytest.raises(JudgeUnavailableError, match="HTTP 404.*not found.*ollama pull llama3"):
        query_ollama("grade this", url=fake_ollama.url, timeout=5)


@pytest.mark.parametrize(
    "mode,match",
    [
        ("not-json", "not JSON"),
        ("missing-fields", r"not a chat reply with message.content \(message: Field required\)"),
        ("no-content", "has no message.content"),
    ],
)
def test_garbage_replies_are_clear_errors(fake_ollama, mode, match):
    fake_ollama.mode = mode
    with pytest.raises(JudgeReplyError, match=match):
        query_ollama("grade this", url=fake_ollama.url, timeout=5)


def test_a_model_list_that_is_not_ollamas(fake_ollama):
    fake_ollama.mode = "not-json"
    ready, message = ollama_status(fake_ollama.url, timeout=2)
    assert not ready and "does not answer like Ollama" in message and "ollama serve" in message


def test_a_slow_judge_times_out_instead_of_hanging(fake_ollama):
    fake_ollama.mode = "slow"
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=r"within 0.5 s \(timed out\)"):
        query_ollama("grade this", url=fake_ollama.url, timeout=0.5)
    # the server would answer after 30 s; the client gives up after 0.5 s (generous margin
    # for a loaded machine)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("timeout", [None, 0, -1, float("inf"), float("nan")])
def test_a_request_always_has_a_time_limit(timeout):
    with pytest.raises(ValueError, match="positive number of seconds"):
        query_ollama("grade this", url=closed_port_url(), timeout=timeout)


def test_refused_connection_explains_how_to_start_ollama():
    url = closed_port_url()
    ready, message = ollama_status(url, timeout=1)
    assert not ready and "ollama serve" in message and "ollama pull llama3" in message
    assert f"no answer from an Ollama server at {url} (" in message
    with pytest.raises(JudgeUnavailableError, match="no answer from an Ollama server"):
        query_ollama("grade this", url=url, timeout=1)


def test_a_server_that_does_not_speak_http_is_not_ollama():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_garbage():
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"hello, I am a chat server\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        assert ollama_status(url, timeout=2)[0] is False
        with pytest.raises(JudgeReplyError, match="does not speak HTTP"):
            query_ollama("grade this", url=url, timeout=2)
    finally:
        listener.close()


def test_without_the_ollama_package_the_judge_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "ollama", None)  # `import ollama` now fails
    with pytest.raises(JudgeUnavailableError, match="pip install ollama"):
        query_ollama("grade this", url=closed_port_url(), timeout=1)
    ready, message = ollama_status(closed_port_url(), timeout=1)
    assert not ready and "pip install ollama" in message


# --- only the server named: no redirects, only http(s) addresses ----------------------------
# The ollama client follows redirects by default (to any host) and passes any URL on to
# httpx; a grade must come from the server the learner named, or not at all.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_server_is_refused_not_followed(fake_ollama, status):
    # fake_ollama, on another port, would answer every request with a valid grade
    with running_redirect(fake_ollama.url, status) as redirect:
        start = time.perf_counter()
        with pytest.raises(JudgeUnavailableError, match=rf"redirect \(HTTP {status} to http"):
            query_ollama("grade this", url=redirect.url, timeout=5)
        ready, message = ollama_status(redirect.url, timeout=2)
        assert time.perf_counter() - start < 10  # bounded: no redirect loop, no waiting
    assert not ready and "follows no redirects" in message
    assert fake_ollama.requests == []  # the other server was never asked for a grade


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file://127.0.0.1/etc/passwd",
        "ftp://127.0.0.1:21/",
        "ws://127.0.0.1:11434",
        "localhost:11434",  # no scheme
        "",  # the ollama client would fall back to $OLLAMA_HOST
    ],
)
def test_only_http_and_https_addresses_are_accepted(url, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", closed_port_url())
    expected = r"is not an http:// or https:// address; expected .* http://localhost:11434"
    with pytest.raises(ValueError, match=expected):
        query_ollama("grade this", url=url, timeout=1)
    with pytest.raises(ValueError, match=expected):  # a mistake to fix, not "no judge"
        ollama_status(url, timeout=1)


@pytest.mark.parametrize(
    "url,match",
    [
        ("http://[::1", r"'http://\[::1' is not a valid address"),
        ("http://127.0.0.1:port", r"'http://127.0.0.1:port' is not a valid address"),
        ("http://", r"'http://' names no host"),
        ("https:///api", r"'https:///api' names no host"),
    ],
)
def test_a_malformed_address_is_named(url, match):
    with pytest.raises(ValueError, match=match):
        query_ollama("grade this", url=url, timeout=1)


def test_a_wrong_address_is_refused_before_any_request(monkeypatch):
    monkeypatch.setitem(sys.modules, "ollama", None)  # the check does not even need the client
    with pytest.raises(ValueError, match="is not an http:// or https:// address"):
        query_ollama("grade this", url="file:///etc/passwd", timeout=1)


def test_http_and_https_addresses_reach_the_server():
    url = closed_port_url()
    for address in (url, url.replace("http://", "https://"), url.upper()):
        with pytest.raises(JudgeUnavailableError, match="no answer from an Ollama server"):
            query_ollama("grade this", url=address, timeout=1)
