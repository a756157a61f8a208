"""shared.io: atomic files and folders, JSON with clear errors, sha256."""

import hashlib
import json
import os

import pytest

from shared.io import (
    JSONFileError,
    atomic_folder,
    existing_folder,
    read_folder_metadata,
    read_json,
    sha256_file,
    write_atomically,
    write_json,
)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_atomically_writes_text_as_utf8_and_leaves_no_temporary_file(tmp_path):
    target = write_atomically(tmp_path / "sub" / "notes.txt", "naïve")
    assert target.read_bytes() == "naïve".encode()
    assert _entries(target.parent) == ["notes.txt"]


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = write_atomically(tmp_path / "notes.txt", b"first")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"second")
    assert target.read_bytes() == b"first"
    assert _entries(tmp_path) == ["notes.txt"]  # the temporary file is gone


def test_atomic_folder_replaces_a_folder_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert _entries(target) == ["a.txt"]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("boom")
    assert _entries(target) == ["a.txt"]  # untouched
    assert _entries(tmp_path) == ["ckpt"]  # no temporary or old folder left behind
    with atomic_folder(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert _entries(target) == ["c.txt"]
    assert _entries(tmp_path) == ["ckpt"]


def test_existing_folder_finds_the_old_copy_of_a_save_cut_off_between_renames(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(FileNotFoundError, match="ckpt does not exist"):
        existing_folder(target)
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert existing_folder(target) == target
    os.replace(target, tmp_path / ".ckpt-old")  # what a kill between the renames leaves
    assert existing_folder(target) == tmp_path / ".ckpt-old"


def test_json_round_trip_keeps_unicode_and_ends_with_a_newline(tmp_path):
    path = write_json(tmp_path / "meta.json", {"name": "Ödön", "values": [1, 2.5, None]})
    text = path.read_text(encoding="utf-8")
    assert "Ödön" in text and text.endswith("\n")
    assert read_json(path) == {"name": "Ödön", "values": [1, 2.5, None]}


def test_write_json_of_something_unserialisable_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "meta.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}
    assert _entries(tmp_path) == ["meta.json"]


def test_read_json_names_the_file_and_what_it_is_when_missing_or_damaged(tmp_path):
    with pytest.raises(JSONFileError, match=r"missing\.json is missing: the checkpoint metadata"):
        read_json(tmp_path / "missing.json", "checkpoint metadata")
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": 1,', encoding="utf-8")
    with pytest.raises(JSONFileError, match=r"broken\.json is not valid JSON .*line 1.*damaged"):
        read_json(broken, "classifier settings")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(JSONFileError, match="cannot read the JSON file"):
        read_json(binary)


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_read_folder_metadata_finds_the_folder_or_explains_what_is_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"is not a checkpoint folder \(no checkpoint\.json\)"
    ):
        read_folder_metadata(
            tmp_path / "nowhere", "checkpoint.json", "checkpoint", "save_checkpoint"
        )
    with atomic_folder(tmp_path / "ckpt") as tmp:
        write_json(tmp / "checkpoint.json", {"step": 3})
    assert read_folder_metadata(tmp_path / "ckpt", "checkpoint.json", "checkpoint", "x") == (
        tmp_path / "ckpt",
        {"step": 3},
    )
    os.replace(tmp_path / "ckpt", tmp_path / ".ckpt-old")
    folder, meta = read_folder_metadata(tmp_path / "ckpt", "checkpoint.json", "checkpoint", "x")
    assert folder.name == ".ckpt-old" and meta == {"step": 3}
