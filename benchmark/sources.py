"""Real data sources: what each one is, where xbench looks for it, and whether it is there and right.

Plugins declare their sources (hook ``xbench_data_sources``, yielding :class:`DataSource`); the core
owns everything else: the one data root, the downloads (:mod:`xbench.download`), the checksums,
the state that ``xbench data list`` shows and the provenance a run records. A source is one of

- ``download``: files with a URL and a published checksum, fetched by ``xbench data fetch``;
- ``terms``: data behind terms of access (HCP, ImageNet): ``fetch`` prints the steps, ``verify``
  checks the layout once the user has placed it;
- ``package``: files a package manager installs (a Debian package, a wheel's package data).

Where a source lives: its per-dataset variable (``env``, e.g. ``XBENCH_MEDMNIST_DIR``) when set,
else a package's own folder (``location``), else ``$XBENCH_DATA/<folder>`` (default a user cache
folder, ``~/.cache/xbench/data`` on Linux).

Two documented overrides serve mirrors: ``XBENCH_DATA_MIRROR`` (a base URL laid out like the data
root: ``<mirror>/<folder>/<file>``, same checksums) and ``XBENCH_DATA_SOURCES`` (a TOML file whose
tables, named after sources, replace a file's ``url``, ``checksum`` and ``size``; for a private
copy with checksums of its own). Provenance says when either was used.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

DATA_ENV = "XBENCH_DATA"
MIRROR_ENV = "XBENCH_DATA_MIRROR"
CATALOGUE_ENV = "XBENCH_DATA_SOURCES"
SOURCE_KINDS = ("download", "terms", "package")
DATA_KINDS = ("real", "sample", "generated", "stand-in", "unknown")
"""What the data a cell used is: a real dataset, a real sample a package ships, data xbench
generates, a stand-in a config asked for in place of missing data, or not stated by its plugin."""
STAMPS = ".xbench-verified.json"
PART = ".part"
ALGORITHMS = ("md5", "sha256")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its path in the source's folder, where to download it and its
    published checksum, ``"md5:<hex>"`` or ``"sha256:<hex>"`` (a prefix of at least 8 digits is
    accepted: torch hub publishes the first 8 in its file names)."""

    name: str
    url: str = ""
    checksum: str = ""
    size: int | None = None
    """Bytes, as published; with ``DataSource.size_note`` it may be an estimate (never used to cut a download)."""


@dataclass(frozen=True)
class DataSource:
    """A source of real data or weights, as a plugin declares it (see the module docstring).

    ``name`` is lowercase, with ``:`` between levels (``medmnist:breastmnist:64``), so that
    ``xbench data fetch medmnist:breastmnist`` takes every size. ``layout(folder)`` says why a
    placed folder is not usable (None when it is); ``prepare(folder, report)`` runs after the
    files are downloaded and verified (unpack, skull-strip), writing what ``layout`` checks.
    ``data_kind`` is what a cell that reads it used: ``real`` or ``sample``.
    """

    NAME_PATTERN: ClassVar[re.Pattern] = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(:[a-z0-9][a-z0-9_.\-]*)*$")

    name: str
    description: str
    licence: str
    kind: str = "download"
    files: tuple[RemoteFile, ...] = ()
    folder: str = ""
    env: str = ""
    location: Callable[[], Path | None] | None = None
    homepage: str = ""
    size_note: str = ""
    steps: str = ""
    layout: Callable[[Path], str | None] | None = None
    prepare: Callable[[Path, Callable[[str], None]], None] | None = None
    version: str = ""
    data_kind: str = "real"

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"data source {self.name!r}: kind {self.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        if self.data_kind not in ("real", "sample"):
            raise ValueError(f"data source {self.name!r}: data_kind must be 'real' or 'sample'")
        for f in self.files:
            if f.checksum:
                parse_checksum(f.checksum)

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return sum(sizes) if sizes and all(s is not None for s in sizes) else None

    @property
    def fetchable(self) -> bool:
        return self.kind == "download" and all(f.url for f in self.files) and bool(self.files)


def weights_source(name: str, description: str, url: str, checksum: str, licence: str, *, size: int | None = None,
                   homepage: str = "", version: str = "", size_note: str = "") -> DataSource:
    """A downloadable pre-trained weights file, kept in ``$XBENCH_DATA/weights``: registering one
    is this one record (read it back with :func:`file_path`)."""
    file = url.split("?")[0].rsplit("/", 1)[-1]
    return DataSource(name=name, description=description, licence=licence, folder="weights",
                      files=(RemoteFile(file, url, checksum, size),), homepage=homepage, version=version,
                      size_note=size_note)


# ----------------------------------------------------------------------------- where data lives

def data_root() -> Path:
    """``$XBENCH_DATA``, else the user cache folder's ``xbench/data`` (platformdirs)."""
    text = os.environ.get(DATA_ENV, "").strip()
    if text:
        return Path(text).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("xbench", appauthor=False)) / "data"


def source_dir(source: DataSource) -> Path | None:
    """The folder xbench reads ``source`` from (None: a package that is not installed)."""
    if source.env and os.environ.get(source.env, "").strip():
        return Path(os.environ[source.env].strip()).expanduser()
    if source.location is not None:
        return source.location()
    return data_root() / (source.folder or source.name.split(":")[0])


def file_path(source: DataSource, name: str | None = None) -> Path | None:
    """Where one file of ``source`` lives (its only file when ``name`` is None)."""
    folder = source_dir(source)
    if folder is None:
        return None
    if name is None:
        if len(source.files) != 1:
            return folder
        name = source.files[0].name
    return folder / name


def where(source: DataSource) -> Path | None:
    """What ``xbench data path`` prints: the file of a one-file source, else the folder."""
    return file_path(source) if len(source.files) == 1 else source_dir(source)


# ----------------------------------------------------------------------------- mirrors and overrides

def effective(source: DataSource) -> tuple[DataSource, str]:
    """``source`` with the mirror and the local catalogue applied, and a note saying which (or "")."""
    notes = []
    files = list(source.files)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and source.kind == "download":
        folder = source.folder or source.name.split(":")[0]
        files = [replace(f, url=f"{mirror.rstrip('/')}/{folder}/{f.name}") for f in files]
        notes.append(f"downloaded from the mirror ${MIRROR_ENV}")
    override = catalogue().get(source.name)
    if override:
        if len(files) != 1:
            raise _catalogue_error(f"[{source.name!r}] has {len(files)} files; the catalogue can only replace the "
                                   "url, checksum and size of a one-file source")
        files = [replace(files[0], **override)]
        notes.append(f"url and checksum from ${CATALOGUE_ENV}, not the publisher's")
    return replace(source, files=tuple(files)), "; ".join(notes)


def catalogue() -> dict[str, dict[str, Any]]:
    """The tables of the TOML file ``$XBENCH_DATA_SOURCES`` (``{}`` when unset), checked."""
    text = os.environ.get(CATALOGUE_ENV, "").strip()
    if not text:
        return {}
    path = Path(text).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _catalogue_error(f"cannot be read ({type(exc).__name__}: {exc})") from None
    out = {}
    for name, table in data.items():
        if not isinstance(table, Mapping) or not set(table) <= {"url", "checksum", "size"}:
            raise _catalogue_error(f"[{name!r}] must be a table with the keys url, checksum and size (any of them), "
                                   f"got {table!r}")
        if "checksum" in table:
            parse_checksum(str(table["checksum"]))
        if "size" in table and not isinstance(table["size"], int):
            raise _catalogue_error(f"[{name!r}] size must be an integer number of bytes")
        out[name] = dict(table)
    return out


def _catalogue_error(problem: str):
    from .errors import UsageError

    return UsageError(f"${CATALOGUE_ENV} ({os.environ.get(CATALOGUE_ENV)!r}) {problem}. It is a TOML file of tables "
                      "named after sources, e.g. [\"medmnist:breastmnist:64\"] url = \"https://mirror/…\" checksum = "
                      "\"md5:…\"; unset the variable to use the published records.")


# ----------------------------------------------------------------------------- checksums

def parse_checksum(text: str) -> tuple[str, str]:
    """``("md5", hex)`` from ``"md5:hex"``; a ValueError naming the accepted forms otherwise."""
    algo, sep, digest = str(text).partition(":")
    digest = digest.strip().lower()
    full = {"md5": 32, "sha256": 64}
    if not sep or algo not in full or not re.fullmatch(r"[0-9a-f]+", digest) \
            or not (8 <= len(digest) <= full[algo]) or (algo == "md5" and len(digest) != 32):
        raise ValueError(f"checksum {text!r} is not 'md5:<32 hex digits>' or 'sha256:<8 to 64 hex digits>'")
    return algo, digest


def file_digest(path: Path, algo: str, *, chunk: int = 1 << 22) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def matches(expected: str, actual_hex: str) -> bool:
    """Whether a file's full hex digest matches a published checksum (a prefix for torch hub's)."""
    _, digest = parse_checksum(expected)
    return actual_hex.lower().startswith(digest)


class Stamps:
    """Digests of files already hashed, by path, size and modification time, in the data root's
    ``.xbench-verified.json``: ``xbench data list`` and loaders read a file's state without
    re-reading gigabytes. Best effort: a data root that cannot be written only costs re-hashing."""

    def __init__(self, root: Path | None = None):
        self.path = (root or data_root()) / STAMPS

    def _read(self) -> dict[str, Any]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return str(path.resolve()), st.st_size, st.st_mtime_ns

    def get(self, path: Path, algo: str) -> str | None:
        key = self._key(path)
        entry = self._read().get(key[0]) if key else None
        if not isinstance(entry, dict) or (entry.get("size"), entry.get("mtime_ns")) != key[1:]:
            return None
        return entry.get(algo)

    def put(self, path: Path, algo: str, hexdigest: str) -> None:
        key = self._key(path)
        if key is None:
            return
        data = self._read()
        entry = data.get(key[0]) if isinstance(data.get(key[0]), dict) else {}
        if (entry.get("size"), entry.get("mtime_ns")) != key[1:]:
            entry = {}
        data[key[0]] = {**entry, "size": key[1], "mtime_ns": key[2], algo: hexdigest}
        try:
            from .atomic import atomic_write_json

            atomic_write_json(self.path, data)
        except OSError:
            pass


def digest_of(path: Path, algo: str, *, recompute: bool = False, stamps: Stamps | None = None) -> str:
    """A file's hex digest, from the stamps when its size and time are unchanged (unless ``recompute``)."""
    stamps = stamps or Stamps()
    if not recompute:
        known = stamps.get(path, algo)
        if known:
            return known
    value = file_digest(path, algo)
    stamps.put(path, algo, value)
    return value


# ----------------------------------------------------------------------------- state

STATES = ("verified", "present", "partial", "missing", "corrupt", "not installed")


@dataclass
class FileState:
    name: str
    path: Path | None
    state: str
    checksum: str = ""
    actual: str = ""
    problem: str = ""


@dataclass
class SourceState:
    """What ``xbench data list`` and ``verify`` say about one source."""

    source: DataSource
    folder: Path | None
    state: str
    files: list[FileState] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("verified", "present")


def inspect(source: DataSource, *, hash_files: bool = False, recompute: bool = False) -> SourceState:
    """The state of ``source`` on disk. Without ``hash_files`` only known digests (stamps) are used,
    so it is cheap; with it every present file is hashed (``recompute`` ignores the stamps)."""
    source, note = effective(source)
    folder = source_dir(source)
    if folder is None:
        return SourceState(source, None, "not installed", note=note,
                           problems=[f"not installed: {source.steps}" if source.steps else "not installed"])
    stamps = Stamps()
    files = []
    for f in source.files:
        path = folder / f.name
        fs = FileState(f.name, path, "missing", checksum=f.checksum)
        if path.is_file():
            fs.state = "present"
            if f.checksum:
                algo, _ = parse_checksum(f.checksum)
                actual = digest_of(path, algo, recompute=recompute, stamps=stamps) if hash_files \
                    else stamps.get(path, algo)
                if actual:
                    fs.actual = f"{algo}:{actual}"
                    fs.state = "verified" if matches(f.checksum, actual) else "corrupt"
                    if fs.state == "corrupt":
                        fs.problem = (f"{path} has {algo} {actual}, the published checksum is {f.checksum}: "
                                      "the file is damaged or another version")
        elif Path(str(path) + PART).is_file():
            fs.state = "partial"
        files.append(fs)
    problems = [fs.problem for fs in files if fs.problem]
    states = {fs.state for fs in files}
    if "corrupt" in states:
        state = "corrupt"
    elif not files:
        state = "present" if folder.exists() else "missing"
    elif states == {"verified"}:
        state = "verified"
    elif states <= {"verified", "present"}:
        state = "present"
    elif "partial" in states:
        state = "partial"
    elif states & {"verified", "present"}:
        state = "partial"
        problems.append("some files are missing: " + ", ".join(fs.name for fs in files if fs.state == "missing"))
    else:
        state = "missing"
    if source.layout is not None and state in ("verified", "present") and folder.exists():
        problem = source.layout(folder)
        if problem:
            state = "corrupt" if source.kind != "download" or not source.prepare else "partial"
            problems.append(problem)
        elif not source.files and (hash_files or source.kind != "download"):
            state = "verified"  # a placed folder without checksums: its layout is what can be checked
    return SourceState(source, folder, state, files, problems, note)


def how_to_get(source: DataSource) -> str:
    """One line: the command, or where the steps are."""
    if source.fetchable:
        return f"xbench data fetch {source.name}"
    if source.kind == "terms":
        return f"terms of access: `xbench data fetch {source.name}` prints the steps"
    return source.steps.splitlines()[0] if source.steps else "installed with its package"


def missing_message(source: DataSource, what: str = "") -> str:
    """A sentence for loaders and presets: the source is not here, and the command that gets it."""
    folder = where(source)
    lead = what or f"{source.description} ({source.name})"
    return f"{lead} is not at {str(folder)!r}; {how_to_get(source)}"


# ----------------------------------------------------------------------------- selecting sources

def select(sources: Mapping[str, DataSource], patterns: Sequence[str]) -> list[DataSource]:
    """Sources named by each pattern: an exact name, a name and everything below it
    (``medmnist:breastmnist`` takes ``medmnist:breastmnist:64``), or a glob. A UsageError with the
    closest names when a pattern matches nothing."""
    from .errors import UsageError, did_you_mean

    chosen: dict[str, DataSource] = {}
    for pattern in patterns:
        found = [n for n in sorted(sources) if n == pattern or n.startswith(pattern + ":")
                 or fnmatch.fnmatchcase(n, pattern)]
        if not found:
            groups = sorted({n.rsplit(":", 1)[0] for n in sources if ":" in n} | set(sources))
            raise UsageError(f"No data source is named {pattern!r}{did_you_mean(pattern, groups)}. "
                             "`xbench data list` shows every source the installed plugins know.")
        for n in found:
            chosen[n] = sources[n]
    return list(chosen.values())


# ----------------------------------------------------------------------------- provenance

def provenance(kind: str = "", *, source: DataSource | None = None, files: Iterable[Path] = (), detail: str = "",
               **extra: Any) -> dict[str, Any]:
    """What a dataset records in ``Dataset.info["provenance"]`` (and a run in its manifest): the
    source, its licence and version, what kind of data it is (default: the source's ``data_kind``),
    and the checksum of each file read, with whether it matches the published one (``verified``:
    True, False, or None when there is no published checksum)."""
    kind = kind or (source.data_kind if source is not None else "unknown")
    if kind not in DATA_KINDS:
        raise ValueError(f"provenance kind {kind!r} is not one of {', '.join(DATA_KINDS)}")
    record: dict[str, Any] = {"kind": kind}
    if source is not None:
        source, note = effective(source)
        record.update(source=source.name, description=source.description, licence=source.licence,
                      version=source.version)
        if note:
            record["note"] = note
        published = {f.name: f.checksum for f in source.files}
        folder = source_dir(source)
        checked = []
        for path in files:
            path = Path(path)
            rel = _relative(path, folder)
            expected = published.get(rel, "")
            algo = parse_checksum(expected)[0] if expected else "sha256"
            actual = digest_of(path, algo)
            checked.append({"file": rel, "checksum": f"{algo}:{actual}",
                            "verified": matches(expected, actual) if expected else None})
        if checked:
            record["files"] = checked
            states = {c["verified"] for c in checked}
            record["verified"] = False if False in states else (True if states == {True} else None)
    if detail:
        record["detail"] = detail
    record.update(extra)
    return record


def _relative(path: Path, folder: Path | None) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve())) if folder else path.name
    except ValueError:
        return path.name


def folder_fingerprint(files: Sequence[Path]) -> str:
    """A short identity of a set of files by name and size (no reading): for placed folders
    without published checksums, so two runs can tell whether they read the same set."""
    from .hashing import content_hash

    items = []
    for f in files:
        try:
            items.append((Path(f).name, Path(f).stat().st_size))
        except OSError:
            items.append((Path(f).name, None))
    return f"files:{len(items)}:{content_hash(sorted(items, key=str))}"


def cell_data(dataset_label: str, info: Mapping[str, Any], stand_in_for: str = "") -> dict[str, Any]:
    """The data record of one cell for the manifest: the dataset's provenance (``unknown`` when its
    plugin states none), and, for a stand-in a config asked for, what it stands in for."""
    record = dict(info.get("provenance") or {"kind": "unknown"})
    record["dataset"] = dataset_label
    if stand_in_for:
        record["stand_in_for"] = stand_in_for
        record["data_kind"] = record.get("kind", "unknown")
        record["kind"] = "stand-in"
    return record
