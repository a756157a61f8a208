"""Files the course writes and reads back: atomically, checksummed, as JSON.

Every file or folder a chapter saves (checkpoints, classifiers, token shards, model
answers) goes through this module, so there is one implementation of the rename dance:

- ``write_atomically(path, data)`` writes a file under a temporary name in the same
  folder, flushes it to disk, then renames it over ``path``. A reader, or a run killed
  half-way, sees the old file or the complete new one, never a torn one.
- ``atomic_folder(path)`` does the same for a folder of files: the ``with`` block fills a
  temporary folder, which replaces ``path`` only when the block succeeded. It never
  deletes what it did not write: a folder it saved holds a small ``.gpt-course.json``
  listing its files, and any other non-empty folder (a project, a folder of earlier
  runs) is refused with ``FolderNotOursError``. Temporary folders left by a killed save
  are cleaned at the next save.
- ``saved_folder(path)`` / ``existing_folder(path)`` resolve a saved folder in one place,
  including the ``.<name>-old`` copy that a kill between two renames leaves.
- ``write_json`` / ``read_json`` store metadata as UTF-8 JSON; ``read_json`` names the
  file and what to do when it is missing or damaged.
- ``sha256_file`` hashes a file (``shared.resources`` checks every data file with it).

Chapters call these helpers; they teach what is saved, not how a rename is made safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "MARKER_NAME",
    "FolderNotOursError",
    "JSONFileError",
    "atomic_folder",
    "check_output_folder",
    "existing_folder",
    "read_folder_metadata",
    "read_json",
    "resume_folder",
    "saved_folder",
    "sha256_file",
    "write_atomically",
    "write_json",
    "write_json_atomically",
]


# The file atomic_folder adds to every folder it saves: the names it wrote there.
MARKER_NAME = ".gpt-course.json"

# Temporary folders of a killed save older than this are stale even where we cannot
# tell whether the process that made them still runs (another machine, Windows).
_STALE_AFTER_S = 24 * 3600


class JSONFileError(ValueError):
    """A JSON file the course wrote earlier is missing, unreadable, or not valid JSON."""


class FolderNotOursError(FileExistsError):
    """A save would replace a folder (or file) holding things the course did not write."""


def _old_name(path: Path) -> Path:
    # Where atomic_folder parks the previous folder for the instant between two renames.
    return path.with_name(f".{path.name}-old")


def _fsync_folder(folder: Path) -> None:
    # Make a rename inside ``folder`` durable (a no-op where folders cannot be opened).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    # The process's umask (reading it means setting it; it is put straight back).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    # Temporary names carry the writer's process id, so a later save can tell stale ones.
    return f".{path.name}-tmp{os.getpid()}-"


def _is_stale(entry: Path, pid: int) -> bool:
    # A temporary file or folder whose process has ended (or that is a day old).
    try:
        if time.time() - entry.lstat().st_mtime > _STALE_AFTER_S:
            return True
    except OSError:
        return False
    if os.name != "posix" or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, under another user
    return False


def _remove_stale_temporaries(path: Path) -> None:
    # Delete what killed saves of ``path`` left beside it: ``.<name>-tmp<pid>-*``.
    pattern = re.compile(re.escape(f".{path.name}-tmp") + r"(\d+)-[A-Za-z0-9_]+(\.tmp)?")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not _is_stale(entry, int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# What the course's saves wrote before folders carried a marker (checkpoints, classifiers,
# the test-mode stand-in): a folder holding only these names, one of them metadata, is ours.
_UNMARKED_FILES = {"checkpoint.json", "classifier.json", "config.json", "model.safetensors",
                   "optimizer.safetensors", "generation_config.json"}  # fmt: skip
_UNMARKED_METADATA = {"checkpoint.json", "classifier.json", "config.json"}


def _written_here(folder: Path) -> set[str] | None:
    # The names atomic_folder wrote into ``folder`` (from its marker), or None.
    marker = folder / MARKER_NAME
    if not marker.exists():
        entries = list(folder.iterdir())
        names = {entry.name for entry in entries if entry.is_file()}
        if len(names) == len(entries) and names <= _UNMARKED_FILES and names & _UNMARKED_METADATA:
            return names  # saved by an earlier version of the course
        return None
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return {*files, MARKER_NAME}


def check_output_folder(path) -> Path:
    """Make sure a save to ``path`` would delete nothing the course did not write.

    ``path`` may be missing, an empty folder, or a folder ``atomic_folder`` saved whose
    files are all its own. Anything else (a file, a link, a project folder, a folder of
    earlier runs, a checkpoint someone added files to) raises ``FolderNotOursError``
    before any work is done; command lines call this first, so a long run cannot end in
    a refused save. Returns ``path``.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        kind = "a symbolic link" if path.is_symlink() else "a file"
        raise FolderNotOursError(
            f"{path} is {kind}, not a folder the course saved; nothing was changed. "
            "Choose another output folder"
        )
    if not path.is_dir():
        return path
    entries = sorted(entry.name for entry in path.iterdir())
    ours = _written_here(path)
    foreign = [name for name in entries if ours is None or name not in ours]
    if foreign:
        shown = ", ".join(foreign[:4]) + (
            f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        )
        raise FolderNotOursError(
            f"{path} already holds files the course did not save there ({shown}); nothing "
            f"was changed. Choose a new or empty folder (for example {path / 'run'}), or "
            "move those files away"
        )
    return path


def _give_umask_modes(folder: Path) -> None:
    # mkdtemp/mkstemp create private (0700/0600) entries; give them the user's umask.
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(0o666 & ~mask)


@contextmanager
def atomic_folder(path) -> Iterator[Path]:
    """Fill a temporary folder beside ``path``; on success it replaces ``path`` by renaming.

    If the ``with`` block fails, the temporary folder is deleted and ``path`` is untouched.
    Readers see the old folder or the complete new one. Between the two renames that swap
    an existing folder out, the old one is briefly called ``.<name>-old``;
    ``existing_folder`` finds it there.

    Only an empty folder or one this function saved (see ``check_output_folder``) is
    replaced. The new folder gets a ``.gpt-course.json`` naming its files, and modes
    from the user's umask. Temporary folders of earlier, killed saves are removed.
    """
    path = Path(path)
    check_output_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        yield tmp
        files = sorted(entry.name for entry in tmp.iterdir() if entry.name != MARKER_NAME)
        (tmp / MARKER_NAME).write_text(json.dumps({"files": files}) + "\n", encoding="utf-8")
        _give_umask_modes(tmp)
        check_output_folder(path)  # again: files may have appeared while the block ran
        old = _old_name(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # a leftover: ``path`` is complete
            os.replace(path, old)
        # (without ``path``, ``old`` may be the only complete copy: keep it until now)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def saved_folder(path) -> Path | None:
    """The folder ``atomic_folder`` last completed at ``path``, or None if there is none.

    That is ``path`` itself, or ``.<name>-old`` beside it when a save was cut off between
    its two renames (the old folder is complete; the new one never appeared). Loaders
    and resume checks all resolve a saved folder through this function.
    """
    path = Path(path)
    if path.is_dir():
        return path
    old = _old_name(path)
    return old if old.is_dir() else None


def resume_folder(path, resume: bool) -> Path | None:
    """Check a ``--resume`` flag against what is saved at ``path``: the folder to resume, or None.

    ``path`` must be a place the course may write (``check_output_folder``). With
    ``resume`` there must be a saved folder (``saved_folder``, so an interrupted save's
    old copy counts); without it there must be none, so a fresh run never replaces a run
    someone meant to continue. Either mismatch raises an error that says what to pass.
    """
    check_output_folder(path)  # a folder that is neither empty nor ours is refused first
    folder = saved_folder(path)
    if folder is not None and not any(folder.iterdir()):
        folder = None  # an empty folder is a place to start, not a run
    if resume and folder is None:
        raise FileNotFoundError(
            f"nothing to resume: {path} holds no saved run; start without --resume"
        )
    if not resume and folder is not None:
        raise FileExistsError(
            f"{path} already holds a saved run; pass --resume to continue it, or choose another "
            "output folder"
        )
    return folder


def existing_folder(path) -> Path:
    """Like ``saved_folder``, but raises ``FileNotFoundError`` naming both places."""
    folder = saved_folder(path)
    if folder is None:
        path = Path(path)
        raise FileNotFoundError(
            f"{path} does not exist (nor does an interrupted save's {_old_name(path).name})"
        )
    return folder


def read_folder_metadata(path, filename: str, what: str, written_by: str) -> tuple[Path, dict]:
    """Find a folder the course saved (see ``existing_folder``) and read its JSON metadata.

    Returns ``(folder, metadata)``. ``filename`` is the metadata file inside the folder
    (e.g. ``checkpoint.json``), ``what`` names the kind of folder and ``written_by`` what
    writes it, for the error raised when ``path`` is not such a folder.
    """
    try:
        folder = existing_folder(path)
    except FileNotFoundError:
        folder = Path(path)
    not_ours = FileNotFoundError(
        f"{folder} is not a {what} folder (no {filename}); pass the folder written by {written_by}"
    )
    return folder, read_json(folder / filename, f"{what} metadata", if_missing=not_ours)


def write_atomically(path, data: bytes | str) -> Path:
    """Write ``data`` to file ``path`` under a temporary name, flush it to disk, then rename.

    Text is written as UTF-8. Readers (and a run that was killed half-way) see the old
    file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the name of a file to write")
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; use the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` (atomically, see ``write_atomically``)."""
    return write_atomically(path, _json_text(obj))


# The name chapter 7 has always used; the same function.
write_json_atomically = write_json


def read_json(path, what: str = "JSON file", if_missing: Exception | None = None):
    """Read a JSON file, with an error that names the file and what to do when it is damaged.

    ``what`` says what the file is for (e.g. ``"checkpoint metadata"``), for the message.
    ``if_missing`` is the error to raise when there is no such file (the default error
    says only that it is missing; a caller usually knows what writes it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if if_missing is not None:
            raise if_missing from None
        raise JSONFileError(f"{path} is missing: the {what} should be there") from None
    except (OSError, UnicodeDecodeError) as err:
        raise JSONFileError(f"cannot read the {what} {path}: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JSONFileError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"the {what} is damaged: restore it or write it again"
        ) from None


def sha256_file(path) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits.

    (``pooch.file_hash`` does the same, but importing pooch loads ``tqdm.auto``, which warns
    in a notebook kernel without ipywidgets; downloads still go through pooch.)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
