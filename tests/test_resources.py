"""Data access: cache, mirror, verified downloads over real (local) HTTP, offline errors."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from shared.resources import (
    MIRROR_ENV_VAR,
    RESOURCES,
    ChecksumError,
    Resource,
    ResourceUnavailableError,
    fetch,
)

PAYLOAD = b"It was the verdict of the jury.\n" * 100


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache and no mirror."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GPT_COURSE_CACHE", str(cache))
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)
    return cache


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 serving an in-memory dict of path -> bytes."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, files
    server.shutdown()
    server.server_close()


def resource(urls, payload=PAYLOAD, **kw) -> Resource:
    return Resource(
        name="test-file",
        filename="story.txt",
        sha256=hashlib.sha256(payload).hexdigest(),
        urls=tuple(urls),
        description="a test file",
        **kw,
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_is_verified_and_cached(env, http_server):
    base, files = http_server
    files["/story.txt"] = PAYLOAD
    path = fetch(resource([f"{base}/story.txt"]), progress=False)
    assert path == env / "story.txt"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(env) == ["story.txt"]  # no temporary files left behind
    # second call is served from the cache: the server no longer has the file
    files.clear()
    assert fetch(resource([f"{base}/story.txt"]), progress=False) == path


def test_download_with_wrong_hash_is_rejected_and_nothing_kept(env, http_server):
    base, files = http_server
    files["/story.txt"] = PAYLOAD[:-10]  # truncated on the server
    with pytest.raises(ChecksumError, match="does not match the pinned sha256"):
        fetch(resource([f"{base}/story.txt"]), progress=False)
    assert leftovers(env) == []


def test_backup_url_used_when_first_fails(env, http_server):
    base, files = http_server
    files["/backup/story.txt"] = PAYLOAD
    path = fetch(resource([f"{base}/missing.txt", f"{base}/backup/story.txt"]), progress=False)
    assert path.read_bytes() == PAYLOAD


def test_zip_member_is_extracted_and_verified(env, http_server):
    base, files = http_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("story.txt", PAYLOAD)
    files["/data.zip"] = buffer.getvalue()
    path = fetch(resource([f"{base}/data.zip"], archive_member="story.txt"), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert leftovers(env) == ["story.txt"]

    wrong = resource([f"{base}/data.zip"], payload=b"other", archive_member="story.txt")
    (env / "story.txt").unlink()
    with pytest.raises(ChecksumError, match="inside the archive"):
        fetch(wrong, progress=False)
    assert leftovers(env) == []


def test_corrupt_cache_entry_is_replaced(env, http_server):
    base, files = http_server
    files["/story.txt"] = PAYLOAD
    env.mkdir(parents=True)
    (env / "story.txt").write_bytes(b"half a fi")
    path = fetch(resource([f"{base}/story.txt"]), progress=False)
    assert path.read_bytes() == PAYLOAD


def test_mirror_is_used_when_set(env, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "story.txt").write_bytes(PAYLOAD)
    monkeypatch.setenv(MIRROR_ENV_VAR, str(mirror))
    # the URL is unreachable: only the mirror can satisfy the request
    assert fetch(resource(["http://127.0.0.1:9/story.txt"]), progress=False) == mirror / "story.txt"
    assert leftovers(env) == []


def test_mirror_with_wrong_hash_is_rejected(env, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "story.txt").write_bytes(b"tampered")
    monkeypatch.setenv(MIRROR_ENV_VAR, str(mirror))
    with pytest.raises(ChecksumError, match=r"story\.txt does not match the pinned checksum"):
        fetch(resource(["http://127.0.0.1:9/story.txt"]), progress=False)


def test_offline_without_copy_explains_both_ways_out(env, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV_VAR, str(tmp_path / "empty-mirror"))
    url = "http://127.0.0.1:9/story.txt"  # port 9 (discard): connection refused
    with pytest.raises(ResourceUnavailableError) as excinfo:
        fetch(resource([url]), progress=False)
    message = str(excinfo.value)
    for expected in ["story.txt", url, MIRROR_ENV_VAR, str(env / "story.txt"), "sha256"]:
        assert expected in message
    assert leftovers(env) == []


def test_unknown_resource_lists_known_names():
    with pytest.raises(KeyError, match="the-verdict"):
        fetch("the-verdicts")


def test_every_known_resource_is_in_the_mirror_with_its_pinned_hash():
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if not mirror:
        pytest.skip(f"{MIRROR_ENV_VAR} is not set")
    for res in RESOURCES.values():
        data = (Path(mirror) / res.filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == res.sha256, res.name


@pytest.mark.slow
def test_tiktoken_works_offline_from_the_mirror(tmp_path):
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if not mirror:
        pytest.skip(f"{MIRROR_ENV_VAR} is not set")
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["GPT_COURSE_CACHE"] = str(tmp_path / "cache")
    code = "import shared; print(shared.gpt2_tokenizer().encode('Hello, world'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[15496, 11, 995]"
    seeded = sorted(p.name for p in (tmp_path / "cache" / "tiktoken").iterdir())
    assert seeded == [
        "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
        "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    ]
