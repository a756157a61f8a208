"""Find the course's data files: local cache, then a mirror folder, then the web.

``fetch("the-verdict")`` returns a local path to a verified copy of a named file:

1. the course cache (``GPT_COURSE_CACHE``, default ``~/.cache/gpt-from-scratch``);
2. a mirror folder named by ``GPT_COURSE_DATA_MIRROR`` holding the files under
   their plain names (how CI and offline machines provide them);
3. the canonical URL(s), downloaded with a progress bar into the cache.

Every file is checked against a pinned SHA-256. Downloads are written under a
temporary name and renamed only once complete and verified, so a corrupt or
truncated file is never kept or returned.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.io import sha256_file, write_atomically

__all__ = [
    "ChecksumError",
    "RESOURCES",
    "Resource",
    "ResourceError",
    "ResourceUnavailableError",
    "fetch",
    "gpt2_tokenizer",
    "seed_tiktoken_cache",
    "use_mirror_for_tiktoken",
]

CACHE_ENV_VAR = "GPT_COURSE_CACHE"
MIRROR_ENV_VAR = "GPT_COURSE_DATA_MIRROR"
TIKTOKEN_CACHE_ENV_VAR = "TIKTOKEN_CACHE_DIR"


class ResourceError(Exception):
    """Base class for data-access errors."""


class ChecksumError(ResourceError):
    """A file's SHA-256 does not match the pinned value."""


class ResourceUnavailableError(ResourceError):
    """No verified copy could be found or downloaded."""


@dataclass(frozen=True)
class Resource:
    """A data file the course needs, pinned by its SHA-256."""

    name: str
    filename: str
    sha256: str
    urls: tuple[str, ...]
    description: str
    # When the URLs serve a zip archive, the member to extract (verified after extraction).
    archive_member: str | None = None


_BOOK_RAW = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_GPT2_BPE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in [
        Resource(
            name="the-verdict",
            filename="the-verdict.txt",
            sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            urls=(f"{_BOOK_RAW}/ch02/01_main-chapter-code/the-verdict.txt",),
            description="Edith Wharton's short story 'The Verdict' (1908, public domain)",
        ),
        Resource(
            name="sms-spam",
            filename="SMSSpamCollection",
            sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            urls=(
                "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
                "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
            ),
            description="UCI SMS Spam Collection v.1 (tab-separated label and text)",
            archive_member="SMSSpamCollection",
        ),
        Resource(
            name="instruction-data",
            filename="instruction-data.json",
            sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            urls=(f"{_BOOK_RAW}/ch07/01_main-chapter-code/instruction-data.json",),
            description="1,100 instruction/input/output records for instruction fine-tuning",
        ),
        Resource(
            name="gpt2-encoder-json",
            filename="encoder.json",
            sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            urls=(f"{_GPT2_BPE}/encoder.json",),
            description="GPT-2 BPE token-to-id table (used by tiktoken)",
        ),
        Resource(
            name="gpt2-vocab-bpe",
            filename="vocab.bpe",
            sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            urls=(f"{_GPT2_BPE}/vocab.bpe",),
            description="GPT-2 BPE merge list (used by tiktoken)",
        ),
    ]
}


def cache_dir() -> Path:
    """Where verified downloads are kept (``GPT_COURSE_CACHE`` or ``~/.cache/gpt-from-scratch``)."""
    configured = os.environ.get(CACHE_ENV_VAR)
    base = Path(configured) if configured else Path.home() / ".cache" / "gpt-from-scratch"
    return base.expanduser()


def mirror_dir() -> Path | None:
    """The offline mirror folder named by ``GPT_COURSE_DATA_MIRROR``, if any."""
    configured = os.environ.get(MIRROR_ENV_VAR)
    return Path(configured).expanduser() if configured else None


def _resolve(resource: str | Resource) -> Resource:
    if isinstance(resource, Resource):
        return resource
    try:
        return RESOURCES[resource]
    except KeyError:
        raise KeyError(
            f"unknown resource {resource!r}; the course knows: {', '.join(sorted(RESOURCES))}"
        ) from None


def fetch(resource: str | Resource, *, progress: bool = True) -> Path:
    """Return the path of a verified local copy of ``resource`` (a name or a Resource).

    Raises ``ChecksumError`` when a mirror copy or a download does not match the
    pinned SHA-256, and ``ResourceUnavailableError`` when no copy can be had.
    """
    res = _resolve(resource)
    cached = cache_dir() / res.filename
    if cached.exists():
        if sha256_file(cached) == res.sha256:
            return cached
        cached.unlink()  # a stale or damaged cache entry is never returned

    mirror = mirror_dir()
    if mirror is not None and (mirror / res.filename).is_file():
        mirrored = mirror / res.filename
        actual = sha256_file(mirrored)
        if actual != res.sha256:
            raise ChecksumError(
                f"{mirrored} does not match the pinned checksum of {res.name!r} "
                f"(expected sha256 {res.sha256}, got {actual}). Replace it with the file from "
                f"{res.urls[0]}, or unset {MIRROR_ENV_VAR} to download it."
            )
        return mirrored

    failures = []
    for url in res.urls:
        try:
            return _download(res, url, cached, progress=progress)
        except ChecksumError:
            raise
        except Exception as err:  # network errors differ by library; report them all
            failures.append(f"  {url}: {type(err).__name__}: {err}")
    mirror_note = (
        f"{MIRROR_ENV_VAR} is set to {mirror}, but it holds no {res.filename}"
        if mirror is not None
        else f"{MIRROR_ENV_VAR} is not set"
    )
    raise ResourceUnavailableError(
        f"could not get {res.filename} ({res.description}).\n"
        f"Tried to download it from:\n" + "\n".join(failures) + "\n"
        f"{mirror_note}. To work offline, either\n"
        f"  - put a copy named {res.filename} in a folder and set {MIRROR_ENV_VAR} to that folder, or\n"
        f"  - place it in the cache as {cached}.\n"
        f"The file must have sha256 {res.sha256}."
    )


def _download(res: Resource, url: str, destination: Path, *, progress: bool) -> Path:
    """Download ``url`` and install the verified file at ``destination`` atomically.

    ``pooch`` does the work: it downloads to a temporary name beside the destination,
    checks the hash, and renames the file into place only when it matches. For a zip
    archive it extracts the one member we need; that member's hash is checked here.
    """
    import pooch

    destination.parent.mkdir(parents=True, exist_ok=True)
    if res.archive_member is None:
        try:
            pooch.retrieve(
                url,
                known_hash=f"sha256:{res.sha256}",
                fname=destination.name,
                path=destination.parent,
                progressbar=progress,
            )
        except ValueError as err:
            if "hash" not in str(err).lower():
                raise
            raise ChecksumError(
                f"the download of {res.filename} from {url} does not match the pinned "
                f"sha256 {res.sha256}; nothing was kept. The server may be serving a changed "
                f"or damaged file: try again later, or provide a verified copy through {MIRROR_ENV_VAR}."
            ) from None
        return destination
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as tmp:
        (member,) = pooch.retrieve(
            url,
            known_hash=None,
            fname="archive.zip",
            path=tmp,
            progressbar=progress,
            processor=pooch.Unzip(members=[res.archive_member]),
        )
        actual = sha256_file(member)
        if actual != res.sha256:
            raise ChecksumError(
                f"{res.archive_member} inside the archive from {url} has sha256 {actual}, "
                f"expected {res.sha256}; nothing was kept. Provide a verified copy through {MIRROR_ENV_VAR}."
            )
        os.replace(member, destination)  # atomic on one filesystem: never half-written
    return destination


# tiktoken caches each file under the sha1 of the URL it downloads it from.
_TIKTOKEN_CACHE_KEYS = {
    "gpt2-vocab-bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2-encoder-json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


def seed_tiktoken_cache(target: Path | None = None) -> Path:
    """Make ``tiktoken.get_encoding("gpt2")`` work without network access.

    Copies the two GPT-2 BPE files (found with ``fetch``: cache, mirror or download)
    into a tiktoken cache folder under the names tiktoken looks for, and points
    ``TIKTOKEN_CACHE_DIR`` at it for this process and the processes it starts.
    Online users never need this: tiktoken downloads the files itself.
    """
    target = Path(target) if target is not None else cache_dir() / "tiktoken"
    target.mkdir(parents=True, exist_ok=True)
    for name, key in _TIKTOKEN_CACHE_KEYS.items():
        dest = target / key
        source = fetch(name, progress=False)
        if not dest.exists() or sha256_file(dest) != RESOURCES[name].sha256:
            write_atomically(dest, source.read_bytes())
    os.environ[TIKTOKEN_CACHE_ENV_VAR] = str(target)
    return target


def use_mirror_for_tiktoken() -> Path | None:
    """Seed tiktoken's cache from the mirror when a mirror is set and tiktoken has no cache yet.

    Runs when ``shared`` is imported, so ``tiktoken.get_encoding("gpt2")`` works offline in
    any notebook that imports the course. Does nothing without a mirror (online users) or
    when ``TIKTOKEN_CACHE_DIR`` is already set. Returns the cache folder it set, if any.
    """
    if mirror_dir() is None or TIKTOKEN_CACHE_ENV_VAR in os.environ:
        return None
    try:
        return seed_tiktoken_cache()
    except ResourceError as err:
        import warnings

        warnings.warn(f"could not seed tiktoken's cache from the mirror: {err}", stacklevel=2)
        return None  # tiktoken will try to download the files itself


def gpt2_tokenizer():
    """``tiktoken``'s GPT-2 encoding, seeded from the mirror when one is configured."""
    import tiktoken

    use_mirror_for_tiktoken()
    return tiktoken.get_encoding("gpt2")
