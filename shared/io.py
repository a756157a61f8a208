"""Files the course writes and reads back: atomically, checksummed, as JSON.

Every file or folder a chapter saves (checkpoints, classifiers, token shards, model
answers) goes through this module, so there is one implementation of the rename dance:

- ``write_atomically(path, data)`` writes a file under a temporary name in the same
  folder, flushes it to disk, then renames it over ``path``. A reader, or a run killed
  half-way, sees the old file or the complete new one, never a torn one.
- ``atomic_folder(path)`` does the same for a folder of files: the ``with`` block fills a
  temporary folder, which replaces ``path`` only when the block succeeded.
- ``write_json`` / ``read_json`` store metadata as UTF-8 JSON; ``read_json`` names the
  file and what to do when it is missing or damaged.
- ``sha256_file`` hashes a file (``shared.resources`` checks every data file with it).

Chapters call these helpers; they teach what is saved, not how a rename is made safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "JSONFileError",
    "atomic_folder",
    "existing_folder",
    "read_folder_metadata",
    "read_json",
    "sha256_file",
    "write_atomically",
    "write_json",
    "write_json_atomically",
]


class JSONFileError(ValueError):
    """A JSON file the course wrote earlier is missing, unreadable, or not valid JSON."""


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


@contextmanager
def atomic_folder(path) -> Iterator[Path]:
    """Fill a temporary folder beside ``path``; on success it replaces ``path`` by renaming.

    If the ``with`` block fails, the temporary folder is deleted and ``path`` is untouched.
    Readers see the old folder or the complete new one. Between the two renames that swap
    an existing folder out, the old one is briefly called ``.<name>-old``;
    ``existing_folder`` finds it there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        old = _old_name(path)
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def existing_folder(path) -> Path:
    """The folder ``atomic_folder`` last completed at ``path``.

    That is ``path`` itself, or ``.<name>-old`` beside it when a save was cut off between
    its two renames (the old folder is complete; the new one never appeared). Raises
    ``FileNotFoundError`` naming both places when neither exists.
    """
    path = Path(path)
    if path.is_dir():
        return path
    old = _old_name(path)
    if old.is_dir():
        return old
    raise FileNotFoundError(f"{path} does not exist (nor does an interrupted save's {old.name})")


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
    meta_file = folder / filename
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{folder} is not a {what} folder (no {filename}); pass the folder written by "
            f"{written_by}"
        )
    return folder, read_json(meta_file, f"{what} metadata")


def write_atomically(path, data: bytes | str) -> Path:
    """Write ``data`` to file ``path`` under a temporary name, flush it to disk, then rename.

    Text is written as UTF-8. Readers (and a run that was killed half-way) see the old
    file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
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


def read_json(path, what: str = "JSON file"):
    """Read a JSON file, with an error that names the file and what to do when it is damaged.

    ``what`` says what the file is for (e.g. ``"checkpoint metadata"``), for the message.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
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
