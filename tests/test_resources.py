"""Data access: cache, mirror, verified downloads over real (local) HTTP, offline errors."""

import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

import shared.resources as resources
from shared.resources import (
    MIRROR_ENV_VAR,
    RESOURCES,
    ChecksumError,
    Resource,
    ResourceError,
    ResourceUnavailableError,
    fetch,
    gpt2_tokenizer,
    use_mirror_for_tiktoken,
)

PAYLOAD = b"It was the verdict of the jury.\n" * 100
# the offline mirror the tests run with, read before any fixture unsets the variable
REAL_MIRROR = os.environ.get(MIRROR_ENV_VAR)


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
    member = dict(archive_member="story.txt", max_bytes=len(PAYLOAD) + 100)
    path = fetch(resource([f"{base}/data.zip"], **member), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert leftovers(env) == ["story.txt"]

    wrong = resource([f"{base}/data.zip"], payload=b"other", **member)
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


# --- fault tests: the zip archive is extracted with a size limit ------------------------


@pytest.fixture
def served(monkeypatch):
    """``pooch.retrieve`` copying local files instead of downloading: url -> local path."""
    import pooch

    files: dict[str, Path] = {}

    def fake_retrieve(url, known_hash, fname=None, path=None, processor=None, **kw):
        if url not in files:
            raise ConnectionError(f"no route to {url}")
        dest = Path(path) / fname
        shutil.copyfile(files[url], dest)
        return processor(str(dest), "download", None) if processor else str(dest)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    return files


def zip_file(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


ARCHIVE_URL = "https://example.invalid/data.zip"
IN_ARCHIVE = dict(archive_member="story.txt", max_bytes=len(PAYLOAD) + 100)


def test_archive_member_larger_than_max_bytes_is_refused_before_extraction(env, tmp_path, served):
    # 50 MB of zeros compress to about 50 kB: a small zip bomb
    served[ARCHIVE_URL] = zip_file(tmp_path / "bomb.zip", {"story.txt": bytes(50_000_000)})
    with pytest.raises(
        ChecksumError, match=r"story\.txt in the archive .* is larger than the 3,300 bytes"
    ):
        fetch(resource([ARCHIVE_URL], **IN_ARCHIVE), progress=False)
    assert leftovers(env) == []


def test_archive_member_with_a_lying_size_header_is_cut_off(env, tmp_path, served):
    # the headers say 10 bytes; the compressed stream holds 50 MB
    archive = zip_file(tmp_path / "liar.zip", {"story.txt": bytes(50_000_000)})
    data = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo("story.txt")
    real = info.file_size.to_bytes(4, "little")
    for at in (info.header_offset + 22, data.rindex(b"PK\x01\x02") + 24):  # local, central
        assert data[at : at + 4] == real
        data[at : at + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    served[ARCHIVE_URL] = archive
    with pytest.raises(ChecksumError, match="not a readable zip archive|larger than"):
        fetch(resource([ARCHIVE_URL], **IN_ARCHIVE), progress=False)
    assert leftovers(env) == []


def test_archive_without_the_member_is_refused(env, tmp_path, served):
    served[ARCHIVE_URL] = zip_file(tmp_path / "other.zip", {"readme.txt": b"hello"})
    with pytest.raises(
        ChecksumError, match=r"has no member 'story\.txt' \(it holds: readme\.txt\)"
    ):
        fetch(resource([ARCHIVE_URL], **IN_ARCHIVE), progress=False)
    assert leftovers(env) == []


def test_download_that_is_not_a_zip_is_refused(env, tmp_path, served):
    page = tmp_path / "page.html"
    page.write_bytes(b"<html>Service unavailable</html>")
    served[ARCHIVE_URL] = page
    with pytest.raises(ChecksumError, match="not a readable zip archive"):
        fetch(resource([ARCHIVE_URL], **IN_ARCHIVE), progress=False)
    assert leftovers(env) == []


def test_sms_archive_is_bounded_a_little_above_the_real_file(env, tmp_path, served):
    sms = RESOURCES["sms-spam"]
    with pytest.raises(ValueError, match="needs max_bytes"):
        Resource("x", "x", sms.sha256, sms.urls, "x", archive_member="x")
    if not REAL_MIRROR:
        pytest.skip(f"{MIRROR_ENV_VAR} is not set")
    real = (Path(REAL_MIRROR) / sms.filename).read_bytes()
    assert len(real) <= sms.max_bytes <= 1.1 * len(real)
    # the real file comes through the bounded extraction (no mirror here: it is "downloaded")
    served[sms.urls[0]] = zip_file(tmp_path / "sms.zip", {sms.archive_member: real})
    assert fetch("sms-spam", progress=False).read_bytes() == real
    assert leftovers(env) == [sms.filename]


# --- fault tests: gpt2_tokenizer() is the robust way to tiktoken's GPT-2 encoding -------

VOCAB_KEY, ENCODER_KEY = (
    "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
)
HELLO_WORLD = [15496, 11, 995]


@pytest.fixture
def offline_tiktoken(env, tmp_path, monkeypatch):
    """No network for tiktoken or fetch, no tiktoken cache, nothing loaded yet.

    Returns a function that makes a mirror folder holding the named BPE files.
    """
    import tiktoken.load
    import tiktoken.registry

    if not REAL_MIRROR or not (Path(REAL_MIRROR) / "vocab.bpe").is_file():
        pytest.skip(f"{MIRROR_ENV_VAR} with the GPT-2 BPE files is not set")
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(resources, "_GPT2_ENCODING", None, raising=False)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    read_file = tiktoken.load.read_file

    def no_network(blobpath):
        if "://" in blobpath:
            raise ConnectionError(f"Max retries exceeded with url: {blobpath}")
        return read_file(blobpath)

    def no_download(res, url, *args, **kwargs):
        raise ConnectionError(f"no network: {url}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(resources, "_download", no_download)

    def make_mirror(*names: str) -> Path:
        mirror = tmp_path / "mirror"
        mirror.mkdir(exist_ok=True)
        for name in names:
            shutil.copyfile(Path(REAL_MIRROR) / name, mirror / name)
        monkeypatch.setenv(MIRROR_ENV_VAR, str(mirror))
        return mirror

    return make_mirror


def test_gpt2_tokenizer_seeds_tiktoken_from_the_mirror_and_keeps_the_encoding(
    env, offline_tiktoken
):
    offline_tiktoken("encoder.json", "vocab.bpe")
    tokenizer = gpt2_tokenizer()
    assert tokenizer.encode("Hello, world") == HELLO_WORLD
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(env / "tiktoken")
    assert gpt2_tokenizer() is tokenizer


def test_gpt2_tokenizer_with_a_mirror_lacking_a_file_raises_resource_error(env, offline_tiktoken):
    offline_tiktoken("encoder.json")  # vocab.bpe is missing from the mirror
    with pytest.raises(ResourceError, match=r"vocab\.bpe"):
        gpt2_tokenizer()
    assert "TIKTOKEN_CACHE_DIR" not in os.environ  # never pointed at a half-seeded cache


def test_gpt2_tokenizer_repairs_a_damaged_exported_cache_from_the_mirror(
    tmp_path, offline_tiktoken, monkeypatch
):
    offline_tiktoken("encoder.json", "vocab.bpe")
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    shutil.copyfile(tmp_path / "mirror" / "encoder.json", cache / ENCODER_KEY)
    (cache / VOCAB_KEY).write_bytes(b"#version: 0.2\nhalf a fi")  # an interrupted download
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert gpt2_tokenizer().encode("Hello, world") == HELLO_WORLD
    assert resources.sha256_file(cache / VOCAB_KEY) == RESOURCES["gpt2-vocab-bpe"].sha256


def test_gpt2_tokenizer_names_a_damaged_cached_file_it_cannot_repair(
    tmp_path, offline_tiktoken, monkeypatch
):
    offline_tiktoken()
    monkeypatch.delenv(MIRROR_ENV_VAR)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    (cache / VOCAB_KEY).write_bytes(b"<html>404</html>")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(ChecksumError) as excinfo:
        gpt2_tokenizer()
    message = str(excinfo.value)
    for expected in [str(cache / VOCAB_KEY), "vocab.bpe", "damaged", MIRROR_ENV_VAR]:
        assert expected in message
    assert "\n" not in message


def test_gpt2_tokenizer_without_network_or_copies_says_what_to_do(
    tmp_path, offline_tiktoken, monkeypatch
):
    offline_tiktoken()
    monkeypatch.delenv(MIRROR_ENV_VAR)
    cache = tmp_path / "empty-tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(ResourceUnavailableError) as excinfo:
        gpt2_tokenizer()
    message = str(excinfo.value)
    for expected in ["encoder.json", "vocab.bpe", MIRROR_ENV_VAR, str(cache), VOCAB_KEY]:
        assert expected in message


def test_use_mirror_for_tiktoken_warns_and_never_leaves_a_half_seeded_cache(
    env, offline_tiktoken, monkeypatch
):
    offline_tiktoken("encoder.json", "vocab.bpe")
    real_write = resources.write_atomically
    written = []

    def disk_full_after_one_file(path, data):
        if written:
            raise OSError(28, "No space left on device", str(path))
        written.append(path)
        return real_write(path, data)

    monkeypatch.setattr(resources, "write_atomically", disk_full_after_one_file)
    with pytest.warns(UserWarning, match="No space left on device"):
        assert use_mirror_for_tiktoken() is None  # at `import shared`: warn, do not fail
    assert len(written) == 1 and "TIKTOKEN_CACHE_DIR" not in os.environ
