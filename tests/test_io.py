"""shared.io: atomic files and folders, JSON with clear errors, sha256."""

import hashlib
import json
import os

import pytest

from shared.io import (
    MARKER_NAME,
    FolderNotOursError,
    JSONFileError,
    atomic_folder,
    check_output_folder,
    existing_folder,
    read_folder_metadata,
    read_json,
    resume_folder,
    saved_folder,
    sha256_file,
    write_atomically,
    write_json,
)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def _saved(folder):  # what a save wrote, without the marker
    return [name for name in _entries(folder) if name != MARKER_NAME]


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
    assert _saved(target) == ["a.txt"]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("boom")
    assert _saved(target) == ["a.txt"]  # untouched
    assert _entries(tmp_path) == ["ckpt"]  # no temporary or old folder left behind
    with atomic_folder(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert _saved(target) == ["c.txt"]
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


def test_read_json_raises_the_callers_error_for_a_missing_file_only(tmp_path):
    class NotPrepared(ValueError):
        pass

    with pytest.raises(NotPrepared, match="run prepare first"):
        read_json(tmp_path / "absent.json", "manifest", if_missing=NotPrepared("run prepare first"))
    broken = tmp_path / "broken.json"
    broken.write_text("[1,", encoding="utf-8")  # present but damaged: the damage is named
    with pytest.raises(JSONFileError, match="not valid JSON"):
        read_json(broken, "manifest", if_missing=NotPrepared("run prepare first"))


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


# --- Nothing a user owns is ever lost (fault tests) ---


def test_atomic_folder_refuses_a_folder_it_did_not_write_and_deletes_nothing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "story.txt").write_text("my story")
    with pytest.raises(FolderNotOursError, match=r"story\.txt.*nothing was changed"):
        with atomic_folder(project) as tmp:
            (tmp / "model.bin").write_text("weights")
    assert _entries(project) == ["story.txt"]
    assert (project / "story.txt").read_text() == "my story"
    assert _entries(tmp_path) == ["project"]  # no temporary folder left either


def test_a_file_added_to_a_saved_folder_makes_the_next_save_refuse(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOursError, match="notes.txt"):
        check_output_folder(target)
    with pytest.raises(FolderNotOursError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("two")
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "a.txt").read_text() == "one"


def test_check_output_folder_accepts_missing_empty_and_saved_folders_only(tmp_path):
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FolderNotOursError, match="is a file"):
        check_output_folder(tmp_path / "file.txt")
    (tmp_path / "runs" / "spam").mkdir(parents=True)  # a folder of earlier runs
    with pytest.raises(FolderNotOursError, match="spam"):
        check_output_folder(tmp_path / "runs")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_folders_and_files_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_folder(tmp_path / "ckpt") as tmp:
            (tmp / "a.txt").write_text("one")
            write_json(tmp / "meta.json", {})
        note = write_atomically(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "ckpt" / "meta.json").stat().st_mode & 0o777 == 0o640
    assert note.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name != "posix", reason="process ids as on POSIX")
def test_temporaries_of_killed_saves_are_cleaned_at_the_next_save(tmp_path):
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(ended.stdout)
    stale = tmp_path / f".ckpt-tmp{dead_pid}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".notes.txt-tmp{dead_pid}-xyz.tmp"
    stale_file.write_text("half")
    live = tmp_path / f".ckpt-tmp{os.getppid()}-def456"  # a save still running elsewhere
    live.mkdir()
    user_folder = tmp_path / ".ckpt-backup"  # not ours: never touched
    user_folder.mkdir()
    with atomic_folder(tmp_path / "ckpt") as tmp:
        (tmp / "a.txt").write_text("one")
    write_atomically(tmp_path / "notes.txt", "done")
    assert not stale.exists() and not stale_file.exists()
    assert live.exists() and user_folder.exists()


def test_a_save_after_a_kill_between_the_renames_keeps_the_old_copy_until_it_succeeds(
    tmp_path, monkeypatch
):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("epoch 1")
    os.replace(target, tmp_path / ".ckpt-old")  # what a kill between the renames leaves
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(target):
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="killed"):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("epoch 2")
    monkeypatch.undo()
    assert saved_folder(target) == tmp_path / ".ckpt-old"
    assert (saved_folder(target) / "a.txt").read_text() == "epoch 1"
    assert saved_folder(tmp_path / "nothing") is None


def test_resume_finds_the_old_copy_of_a_cut_off_save_and_a_fresh_run_keeps_it(tmp_path):
    # A kill between atomic_folder's two renames leaves only .<name>-old: --resume must find
    # it, and a run without --resume must refuse (not replace it, which would delete it).
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("epoch 1")
    os.replace(target, tmp_path / ".ckpt-old")  # what a kill between the renames leaves
    assert resume_folder(target, True) == tmp_path / ".ckpt-old"
    with pytest.raises(FileExistsError, match=r"ckpt already holds a saved run; pass --resume"):
        resume_folder(target, False)
    assert _entries(tmp_path) == [".ckpt-old"]
    assert (tmp_path / ".ckpt-old" / "a.txt").read_text() == "epoch 1"


def test_write_atomically_refuses_to_replace_a_folder(tmp_path):
    (tmp_path / "answers.json").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_json(tmp_path / "answers.json", [])


def test_a_folder_saved_before_markers_existed_may_still_be_replaced(tmp_path):
    legacy = tmp_path / "spam-classifier"
    legacy.mkdir()
    (legacy / "classifier.json").write_text("{}")
    (legacy / "model.safetensors").write_bytes(b"old")
    with atomic_folder(legacy) as tmp:
        (tmp / "classifier.json").write_text('{"new": true}')
    assert _saved(legacy) == ["classifier.json"]
    (tmp_path / "weights-only").mkdir()  # no metadata file: not recognisably ours
    (tmp_path / "weights-only" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(FolderNotOursError):
        check_output_folder(tmp_path / "weights-only")
