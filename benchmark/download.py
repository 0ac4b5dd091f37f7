"""Downloading one file so that nothing half-done or wrong is ever taken as data.

The bytes go to ``<file>.part`` beside the target, which is locked while this process writes it.
A broken or stalled connection is retried with exponential back-off, resuming from the bytes
already there (HTTP ``Range``; a server that ignores it sends the whole file again). The finished
file is hashed and only renamed onto its final name when the published checksum matches: a
mismatch deletes it, an error that outlasts the retries keeps the partial file for the next
``xbench data fetch`` to resume, and the final name never holds anything but a verified file.
Only ``http`` and ``https`` URLs are fetched.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import XbenchError
from .sources import PART, DataSource, SourceState, Stamps, digest_of, effective, file_digest, inspect, matches, \
    parse_checksum, source_dir

CHUNK = 1 << 16
Progress = Callable[[int, "int | None"], None]
"""Called with (bytes so far, total bytes or None) as the download advances."""


class DownloadError(XbenchError):
    """A download failed for good (after its retries), or its bytes are not the published file."""


class _Retry(Exception):
    """A failure worth another try: a dropped or stalled connection, a 5xx or 429 answer."""


@dataclass(frozen=True)
class Policy:
    """How hard to try: ``retries`` after the first attempt, waiting ``backoff``·2^k seconds
    (at most ``max_wait``); ``timeout`` seconds without a byte counts as a stall."""

    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 60.0
    timeout: float = 30.0


def download(url: str, dest: Path, checksum: str, *, policy: Policy = Policy(),
             progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep) -> Path:
    """Fetch ``url`` to ``dest`` and verify it against ``checksum`` (``"md5:…"``/``"sha256:…"``)."""
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"Cannot download {url!r}: only http and https URLs are fetched. Check the source's "
                            "url (or the mirror / catalogue that replaced it).")
    algo, _ = parse_checksum(checksum)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(str(dest) + PART)
    with open(part, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(f"Another process is downloading {dest} right now ({part} is locked). Wait for it "
                                "to finish, then run the command again.") from None
        attempt = 0
        while True:
            try:
                _transfer(url, handle, policy.timeout, progress)
                break
            except DownloadError:
                if not os.fstat(handle.fileno()).st_size:
                    part.unlink(missing_ok=True)
                raise
            except _Retry as exc:
                attempt += 1
                if attempt > policy.retries:
                    have = os.fstat(handle.fileno()).st_size
                    if not have:
                        part.unlink(missing_ok=True)
                    kept = (f" The {have} bytes received are kept in {part} and the next fetch resumes from them."
                            if have else "")
                    raise DownloadError(f"Downloading {url} failed after {policy.retries + 1} attempts: {exc}.{kept} "
                                        "Check the connection (or a proxy), or set XBENCH_DATA_MIRROR to a mirror, "
                                        "and run the fetch again.") from None
                sleep(min(policy.max_wait, policy.backoff * 2 ** (attempt - 1)))
        handle.flush()
        os.fsync(handle.fileno())
        actual = file_digest(part, algo)
        if not matches(checksum, actual):
            size = os.fstat(handle.fileno()).st_size
            part.unlink(missing_ok=True)
            raise DownloadError(f"The file downloaded from {url} ({size} bytes) has {algo} {actual}, but the "
                                f"published checksum is {checksum}: it is damaged, truncated or another version, "
                                "and was deleted. Run the fetch again; if it fails the same way, the server holds "
                                "another file than the record says (report it, or use a mirror).")
        os.replace(part, dest)
    _fsync_dir(dest.parent)
    Stamps().put(dest, algo, actual)
    return dest


def fetch(source: DataSource, *, force: bool = False, policy: Policy = Policy(),
          progress: Callable[[str], Progress | None] = lambda name: None,
          report: Callable[[str], None] = lambda line: None) -> SourceState:
    """Download every file of ``source`` that is not already here and right, then run its
    ``prepare`` step; the state afterwards. A file that is here but does not match its checksum is
    downloaded again (it is replaced only once the new one verifies). ``force`` downloads all."""
    resolved, note = effective(source)
    if note:
        report(f"{source.name}: {note}")
    if not resolved.fetchable:
        raise DownloadError(f"{source.name} cannot be downloaded by xbench. "
                            f"{resolved.steps or 'See its homepage: ' + resolved.homepage}")
    folder = source_dir(resolved)
    fetched = False
    for f in resolved.files:
        path = folder / f.name
        algo, _ = parse_checksum(f.checksum)
        if path.is_file() and not force:
            if matches(f.checksum, digest_of(path, algo)):
                report(f"{source.name}: {path} is already here and verified")
                continue
            report(f"{source.name}: {path} does not match its checksum {f.checksum}; downloading it again")
        download(f.url, path, f.checksum, policy=policy, progress=progress(f.name))
        fetched = True
    if resolved.prepare is not None:
        problem = resolved.layout(folder) if resolved.layout is not None else None
        if fetched or force or problem:
            report(f"{source.name}: preparing {folder}")
            resolved.prepare(folder, report)
    return inspect(source)


def _transfer(url: str, handle, timeout: float, progress: Progress | None) -> None:
    """One attempt: request the bytes after those in ``handle`` and append them."""
    have = os.fstat(handle.fileno()).st_size
    from . import __version__

    headers = {"User-Agent": f"xbench/{__version__} (+data fetch)", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we have: the checksum decides
            return
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"the server answered {exc.code} {exc.reason}") from None
        raise DownloadError(f"Downloading {url} failed: the server answered {exc.code} {exc.reason}. The file may "
                            "have moved: check the source's homepage (`xbench data list`), or set XBENCH_DATA_MIRROR "
                            "to a mirror.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(f"cannot connect ({_reason(exc)})") from None
    with response:
        start = have
        if have and response.status == 206:
            first = _range_start(response.headers.get("Content-Range", ""))
            if first != have:
                start = 0
        elif have:
            start = 0  # the server ignored Range and sends everything again
        if start == 0 and have:
            handle.seek(0)
            handle.truncate()
        handle.seek(0, os.SEEK_END)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        received = start
        if progress:
            progress(received, total)
        try:
            if start == 0 and have and response.status == 206:
                raise _Retry("the server resumed at the wrong offset")
            while True:
                block = response.read1(CHUNK)  # what has arrived: a stall loses nothing
                if not block:
                    break
                handle.write(block)
                received += len(block)
                if progress:
                    progress(received, total)
        except (socket.timeout, TimeoutError) as exc:
            raise _Retry(f"no data for {timeout:g} s ({_reason(exc)})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"the connection broke ({_reason(exc)})") from None
        finally:
            handle.flush()
        if total is not None and received < total:
            raise _Retry(f"the connection closed after {received} of {total} bytes")


def _range_start(header: str) -> int | None:
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


def _fsync_dir(folder: Path) -> None:
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
