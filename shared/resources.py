"""Find the course's data files: local cache, then a mirror folder, then the web.

``fetch("the-verdict")`` returns a local path to a verified copy of a named file:

1. the course cache (``GPT_COURSE_CACHE``, default ``~/.cache/gpt-from-scratch``);
2. a mirror folder named by ``GPT_COURSE_DATA_MIRROR`` holding the files under
   their plain names (how CI and offline machines provide them);
3. the canonical URL(s), downloaded with a progress bar into the cache.

Every file is checked against a pinned SHA-256. Downloads are written under a
temporary name and renamed only once complete and verified, so a corrupt or
truncated file is never kept or returned. A file that comes inside a zip archive is
extracted only up to its ``max_bytes``, so a damaged or hostile archive cannot fill
the disk before the hash check.

``gpt2_tokenizer()`` is the course's one way to get tiktoken's GPT-2 encoding: it
seeds tiktoken's cache from the mirror, checks the cached files against their pinned
hashes, and says what to do when the files cannot be had.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
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
    # The most bytes extracted from the archive for that member (a little above its real
    # size): a larger member is refused before it reaches the disk.
    max_bytes: int | None = None

    def __post_init__(self):
        if self.archive_member is not None and not self.max_bytes:
            raise ValueError(
                f"resource {self.name!r} is extracted from an archive, so it needs max_bytes "
                "(a little above the member's real size) to bound the extraction"
            )


_BOOK_RAW = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_GPT2_BPE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"


def _one_url(name: str, url: str, sha256: str, description: str) -> Resource:
    """A file served as it is from one URL, kept under the URL's last part (its plain name)."""
    return Resource(name, url.rsplit("/", 1)[1], sha256, (url,), description)


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in [
        _one_url(
            "the-verdict",
            f"{_BOOK_RAW}/ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            "Edith Wharton's short story 'The Verdict' (1908, public domain)",
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
            max_bytes=500_000,  # the file has 477,907 bytes
        ),
        _one_url(
            "instruction-data",
            f"{_BOOK_RAW}/ch07/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            "1,100 instruction/input/output records for instruction fine-tuning",
        ),
        _one_url(
            "instruction-data-with-preference",
            f"{_BOOK_RAW}/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
            "1,100 instruction records with a chosen and a rejected response (for DPO)",
        ),
        _one_url(
            "gpt2-encoder-json",
            f"{_GPT2_BPE}/encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            "GPT-2 BPE token-to-id table (used by tiktoken)",
        ),
        _one_url(
            "gpt2-vocab-bpe",
            f"{_GPT2_BPE}/vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            "GPT-2 BPE merge list (used by tiktoken)",
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
    checks the hash, and renames the file into place only when it matches. A zip archive
    (not pinned: the mirror holds only the extracted file) is downloaded into a temporary
    folder; the one member we need is extracted with a size limit and its hash checked here.
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
        archive = pooch.retrieve(
            url, known_hash=None, fname="archive.zip", path=tmp, progressbar=progress
        )
        member = _extract_member(Path(archive), res, url, Path(tmp) / "member")
        actual = sha256_file(member)
        if actual != res.sha256:
            raise ChecksumError(
                f"{res.archive_member} inside the archive from {url} has sha256 {actual}, "
                f"expected {res.sha256}; nothing was kept. Provide a verified copy through {MIRROR_ENV_VAR}."
            )
        os.replace(member, destination)  # atomic on one filesystem: never half-written
    return destination


def _extract_member(archive: Path, res: Resource, url: str, out: Path) -> Path:
    """Copy ``res.archive_member`` out of the zip ``archive`` into ``out``, at most ``res.max_bytes``.

    The member's declared size is checked first, and the copy stops at the limit whatever
    the header says, so a zip bomb never gets more than ``max_bytes`` onto the disk.
    """
    limit = res.max_bytes
    what = f"the archive downloaded from {url}"
    too_large = (
        f"{res.archive_member} in {what} is larger than the {limit:,} bytes the course "
        f"accepts for it (a changed or hostile archive); nothing was kept. Provide a "
        f"verified {res.filename} through {MIRROR_ENV_VAR}."
    )
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(res.archive_member)
            except KeyError:
                names = zf.namelist()
                held = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise ChecksumError(
                    f"{what} has no member {res.archive_member!r} (it holds: {held or 'nothing'}); "
                    f"nothing was kept. Provide a verified {res.filename} through {MIRROR_ENV_VAR}."
                ) from None
            if info.file_size > limit:
                raise ChecksumError(too_large)
            with zf.open(info) as source, open(out, "wb") as target:
                written = 0  # counted as it streams: a header can lie about the size
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise ChecksumError(too_large)
                    target.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise ChecksumError(
            f"{what} is not a readable zip archive ({err}); nothing was kept. Try again "
            f"later, or provide a verified {res.filename} through {MIRROR_ENV_VAR}."
        ) from None
    return out


# tiktoken caches each file under the sha1 of the URL it downloads it from.
_TIKTOKEN_CACHE_KEYS = {
    "gpt2-vocab-bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "gpt2-encoder-json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


def seed_tiktoken_cache(target: Path | None = None) -> Path:
    """Make ``tiktoken.get_encoding("gpt2")`` work without network access.

    Copies the two GPT-2 BPE files (found with ``fetch``: cache, mirror or download)
    into a tiktoken cache folder under the names tiktoken looks for, and points
    ``TIKTOKEN_CACHE_DIR`` at it for this process and the processes it starts. The
    variable is set only once both files are in place and verified. Online users never
    need this: tiktoken downloads the files itself.
    """
    target = Path(target) if target is not None else cache_dir() / "tiktoken"
    sources = {name: fetch(name, progress=False) for name in _TIKTOKEN_CACHE_KEYS}
    for name, key in _TIKTOKEN_CACHE_KEYS.items():
        dest = target / key
        if not dest.is_file() or sha256_file(dest) != RESOURCES[name].sha256:
            write_atomically(dest, sources[name].read_bytes())
    os.environ[TIKTOKEN_CACHE_ENV_VAR] = str(target)
    return target


def use_mirror_for_tiktoken() -> Path | None:
    """Seed tiktoken's cache from the mirror when a mirror is set and tiktoken has no cache yet.

    Runs when ``shared`` is imported, so ``tiktoken.get_encoding("gpt2")`` works offline in
    any notebook that imports the course. Does nothing without a mirror (online users) or
    when ``TIKTOKEN_CACHE_DIR`` is already set. Never fails: when seeding goes wrong it
    warns and leaves ``TIKTOKEN_CACHE_DIR`` unset (``gpt2_tokenizer()`` then reports the
    problem in full). Returns the cache folder it set, if any.
    """
    if mirror_dir() is None or TIKTOKEN_CACHE_ENV_VAR in os.environ:
        return None
    try:
        return seed_tiktoken_cache()
    except (ResourceError, OSError) as err:
        import warnings

        os.environ.pop(TIKTOKEN_CACHE_ENV_VAR, None)  # never point tiktoken at a half-seeded cache
        warnings.warn(f"could not seed tiktoken's cache from the mirror: {err}", stacklevel=2)
        return None


def _tiktoken_cache_folder() -> Path:
    # Where tiktoken keeps its downloads (the same rule as tiktoken.load.read_file_cached).
    for variable in (TIKTOKEN_CACHE_ENV_VAR, "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _check_tiktoken_cache(folder: Path) -> None:
    """Verify the GPT-2 files in tiktoken's cache ``folder``; repair or add them when possible.

    A damaged file is replaced with a verified copy (``fetch``: course cache, mirror or
    download), or reported as a ``ChecksumError`` naming it. A missing file is added from
    the mirror when one is set (errors propagate); otherwise tiktoken downloads it.
    """
    for name, key in _TIKTOKEN_CACHE_KEYS.items():
        res, path = RESOURCES[name], folder / key
        exists = path.exists()
        if exists and sha256_file(path) == res.sha256:
            continue
        if not exists and mirror_dir() is None:
            continue
        try:
            source = fetch(name, progress=False)
        except ResourceError as err:
            if not exists:
                raise
            reason = (
                str(err)
                if isinstance(err, ChecksumError)
                else "none in the course cache or a mirror, and the download failed"
            )
            raise ChecksumError(
                f"{path} (tiktoken's cached {res.filename}, in {TIKTOKEN_CACHE_ENV_VAR}={folder}) is "
                f"damaged: its sha256 is not {res.sha256}, and no verified copy could be had to "
                f"repair it ({reason}). Delete the file and run again online, or set "
                f"{MIRROR_ENV_VAR} to a folder holding a verified {res.filename}."
            ) from err
        write_atomically(path, source.read_bytes())


_GPT2_ENCODING = None  # the encoding, once loaded (tiktoken keeps it too)


def gpt2_tokenizer():
    """``tiktoken``'s GPT-2 encoding: the course's one way to get the GPT-2 tokenizer.

    With a mirror (``GPT_COURSE_DATA_MIRROR``) it seeds tiktoken's cache from it first
    (errors propagate as ``ResourceError``). Files already in ``TIKTOKEN_CACHE_DIR`` are
    checked against their pinned sha256: a damaged one is repaired from a verified copy or
    reported as a ``ChecksumError``. When tiktoken still cannot load the encoding (no
    network), it raises ``ResourceUnavailableError`` saying how to work offline.
    """
    global _GPT2_ENCODING
    if _GPT2_ENCODING is not None:
        return _GPT2_ENCODING
    import tiktoken

    configured = os.environ.get(TIKTOKEN_CACHE_ENV_VAR)
    if configured:
        _check_tiktoken_cache(Path(configured))
    elif configured is None and mirror_dir() is not None:
        seed_tiktoken_cache()  # strict: a mirror that cannot serve the files is an error
    # (TIKTOKEN_CACHE_DIR="" turns tiktoken's cache off: then it always downloads.)
    try:
        encoding = tiktoken.get_encoding("gpt2")
    except Exception as err:  # network errors come from requests or urllib3: catch them all
        cache = _tiktoken_cache_folder()
        keys = " and ".join(
            f"{k} ({RESOURCES[n].filename})" for n, k in _TIKTOKEN_CACHE_KEYS.items()
        )
        raise ResourceUnavailableError(
            f"tiktoken could not load the GPT-2 encoding ({type(err).__name__}: "
            f"{' '.join(str(err).split())}): it needs "
            f"encoder.json and vocab.bpe, which are not in its cache {cache} and could not be "
            f"downloaded. To work offline, set {MIRROR_ENV_VAR} to a folder holding both files "
            f"(the course copies them into tiktoken's cache), or copy them into {cache} as {keys}."
        ) from err
    _GPT2_ENCODING = encoding
    return encoding
