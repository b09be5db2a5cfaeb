"""Downloads of official weights: resumable, retried, bounded in size and time, hash-checked.

Only urllib (no extra dependency). A file is written to `<id>.pt.part`, resumed with a Range request after a
dropped connection, checked against the lock's sha256 (or recorded on first download) and renamed into place.
"""
from __future__ import annotations

import http.client
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from ..errors import CheckpointError
from ..fs import sha256
from ..models import get_entry
from ..models.zoo import base_url as zoo_base_url
from .store import WeightsError, cache_file, check_loads, home, lock_path, read_lock, record, require_cached


CHUNK = 1 << 16  # 64 KiB reads: small enough for a smooth progress bar, large enough to be cheap
DEFAULT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds; the read timeout is per read, not per file
DEFAULT_RETRIES = 3
BACKOFF_S = 1.0  # retry n waits BACKOFF_S * 2**n (capped at 8x); a retry after progress does not wait
USER_AGENT = "mvit2deploy (+urllib)"

Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total bytes or None)


class OfflineError(WeightsError):
    """The server could not be reached at all (DNS, refused, timeout): nothing to retry."""


class _Retryable(Exception):
    """A transfer that failed after reaching the server: worth another (resumed) attempt."""


def resolve_base_url(base_url: Optional[str] = None) -> str:
    """--base-url, else $MVIT2DEPLOY_BASE_URL, else the manifest's; an http(s) URL with a host, or one line."""
    from urllib.parse import urlsplit

    given, where = (base_url, "--base-url") if base_url else (os.environ.get("MVIT2DEPLOY_BASE_URL"),
                                                               "MVIT2DEPLOY_BASE_URL")
    if not given:
        return zoo_base_url()
    try:
        parts = urlsplit(given)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise WeightsError(f"{where} {given!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in given):
        raise WeightsError(f"{where} {given!r}: not an http(s) URL (expected e.g. https://mirror.example/models/)")
    return given


# ---- download limits: a size cap and an overall deadline per file ----------------------------------------------

DEFAULT_MAX_DOWNLOAD_MB = 1024.0  # $MVIT2DEPLOY_MAX_DOWNLOAD_MB: the cap when no size is recorded for the file
DEFAULT_DEADLINE_S = 1800.0  # $MVIT2DEPLOY_DOWNLOAD_DEADLINE_S: one file, all attempts together
BYTES_PER_PARAM = 8  # manifest bound: twice fp32 per parameter, plus a margin for buffers and pickle framing
MANIFEST_MARGIN = 16 << 20


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise WeightsError(f"${name}={raw!r}: expected a positive number")
    return value


@dataclass
class Limits:
    max_bytes: int
    why: str  # where the cap comes from, for the message
    deadline_s: float

    def __post_init__(self):
        self.end = time.monotonic() + self.deadline_s

    def left(self) -> float:
        return self.end - time.monotonic()


def download_limits(model_id: str, lock: Dict[str, dict]) -> Limits:
    """The size cap of one file: its recorded size in the lock (exact), else the smaller of the manifest's bound
    (parameter count) and $MVIT2DEPLOY_MAX_DOWNLOAD_MB; and the overall deadline."""
    cap_mb = _env_number("MVIT2DEPLOY_MAX_DOWNLOAD_MB", DEFAULT_MAX_DOWNLOAD_MB)
    deadline = _env_number("MVIT2DEPLOY_DOWNLOAD_DEADLINE_S", DEFAULT_DEADLINE_S)
    env_cap = int(cap_mb * 1e6)
    rec = lock.get(model_id) or {}
    if isinstance(rec.get("size"), int) and rec.get("source") == "download" and rec["size"] <= env_cap:
        return Limits(rec["size"], f"the size recorded in {lock_path().name}", deadline)
    params = getattr(get_entry(model_id), "params_m", None)
    if isinstance(params, (int, float)) and params > 0:
        bound = int(params * 1e6 * BYTES_PER_PARAM) + MANIFEST_MARGIN
        if bound < env_cap:
            return Limits(bound, f"{params:g} M parameters in the manifest", deadline)
    return Limits(env_cap, f"MVIT2DEPLOY_MAX_DOWNLOAD_MB={cap_mb:g}", deadline)


class DownloadStopped(WeightsError):
    """Over the size cap or past the deadline: not retried."""


def model_url(model_id: str, base_url: Optional[str] = None) -> str:
    return resolve_base_url(base_url).rstrip("/") + "/" + get_entry(model_id).url.lstrip("/")


def part_file(model_id: str) -> Path:
    return cache_file(model_id).with_name(f"{model_id}.pt.part")



def _timeouts(timeout: Union[float, Tuple[float, float]]) -> Tuple[float, float]:
    return (float(timeout), float(timeout)) if isinstance(timeout, (int, float)) else tuple(map(float, timeout))


def _set_read_timeout(resp, seconds: float) -> None:
    # urllib has one timeout for connect and reads; reach the socket to give reads their own.
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _content_range_start(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _over_cap(model_id: str, part: Path, limits: Limits, what: str) -> DownloadStopped:
    part.unlink(missing_ok=True)  # more than the file can be: what arrived is not worth keeping
    return DownloadStopped(f"cannot download {model_id}: {what}, more than the {limits.max_bytes / 1e6:.1f} MB "
                           f"limit ({limits.why}); stopped and removed {part.name}")


def _past_deadline(model_id: str, part: Path, limits: Limits) -> DownloadStopped:
    have = part.stat().st_size if part.is_file() else 0
    kept = f"; {have} bytes kept in {part.name}, pull again to resume" if have else ""
    return DownloadStopped(f"cannot download {model_id}: not finished within {limits.deadline_s:g} s "
                           f"(MVIT2DEPLOY_DOWNLOAD_DEADLINE_S){kept}")


def _attempt(url: str, part: Path, timeouts: Tuple[float, float], validator: Dict[str, str],
             progress: Optional[Progress], limits: Optional[Limits] = None, model_id: str = "") -> bool:
    """One HTTP request appending to `part`. True when complete; raises _Retryable on a cut transfer."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator.get("v"):  # same-process resume: only splice onto the same version of the file
            headers["If-Range"] = validator["v"]
    with urlopen(Request(url, headers=headers), timeout=timeouts[0]) as resp:
        _set_read_timeout(resp, timeouts[1])
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            if not have or _content_range_start(resp.headers.get("Content-Range")) != have:
                part.unlink(missing_ok=True)  # a range we did not ask for: never splice it in
                raise _Retryable("server sent an unexpected byte range; restarting")
            mode, done = "ab", have
        else:  # fresh start, or the server ignored Range (plain 200): restart cleanly
            mode, done = "wb", 0
        total = done + length if length is not None else None
        if limits is not None and total is not None and total > limits.max_bytes:
            raise _over_cap(model_id, part, limits, f"the server announces {total} bytes")
        validator["v"] = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
        if progress:
            progress(done, total)
        with open(part, mode) as f:
            try:
                while True:
                    if limits is not None:
                        if limits.left() <= 0:
                            f.flush()
                            raise _past_deadline(model_id, part, limits)
                        _set_read_timeout(resp, max(0.05, min(timeouts[1], limits.left())))
                    block = resp.read1(CHUNK)  # what has arrived, so a stall or a cut loses nothing
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if limits is not None and done > limits.max_bytes:
                        f.close()
                        raise _over_cap(model_id, part, limits, f"the server sent over {limits.max_bytes} bytes")
                    if progress:
                        progress(done, total)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                if limits is not None and limits.left() <= 0:
                    f.flush()
                    raise _past_deadline(model_id, part, limits) from None
                raise _Retryable(f"transfer interrupted at {done} bytes ({exc or type(exc).__name__})") from None
    if total is not None and done < total:
        raise _Retryable(f"transfer cut at {done} of {total} bytes")
    return True


def _download(model_id: str, url: str, part: Path, timeout, retries: int, progress: Optional[Progress],
              limits: Optional[Limits] = None) -> None:
    """Fetch `url` into `part`, resuming with Range after a cut. Retries only once the server has answered:
    an unreachable server is reported at once (offline use must fail fast, not after minutes of backoff)."""
    timeouts = _timeouts(timeout)
    hint = f"download it elsewhere and run `mvit2deploy weights import FILE --as {model_id}`"
    reached, validator = False, {}
    for attempt in range(retries + 1):
        before = part.stat().st_size if part.is_file() else 0
        if limits is not None and limits.left() <= 0:
            raise _past_deadline(model_id, part, limits)
        try:
            _attempt(url, part, timeouts if limits is None else (min(timeouts[0], max(0.05, limits.left())),
                                                                 timeouts[1]),
                     validator, progress, limits, model_id)
            return
        except HTTPError as exc:
            reached = True
            if exc.code == 416 and before:  # our partial file is not a prefix of theirs: start over
                part.unlink(missing_ok=True)
                why = "range not satisfiable, restarting"
            elif exc.code == 429 or exc.code >= 500:
                why = f"HTTP {exc.code} {exc.reason}"
            else:
                raise WeightsError(f"cannot download {model_id}: HTTP {exc.code} {exc.reason} for {url} "
                                   f"(check --base-url / MVIT2DEPLOY_BASE_URL), or {hint}") from None
        except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
                reason = f"timed out after {timeouts[0]:g} s"
            if not reached:
                raise OfflineError(f"cannot download {model_id}: {url} unreachable ({reason}); "
                                   f"offline? {hint}") from None
            why = str(reason)
        except _Retryable as exc:
            reached, why = True, str(exc)
        if attempt == retries:
            kept = f"; the partial file {part.name} is kept, pull again to resume" if part.is_file() else ""
            raise WeightsError(f"cannot download {model_id}: {why} (gave up after {retries + 1} attempts){kept}")
        progressed = part.is_file() and part.stat().st_size > before
        pause = 0 if progressed else BACKOFF_S * min(2 ** attempt, 8)
        time.sleep(pause if limits is None else max(0.0, min(pause, limits.left())))


def pull(model_id: str, base_url: Optional[str] = None, timeout=DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
         progress: Optional[Progress] = None, force: bool = False) -> Path:
    """Download the official checkpoint of `model_id` into the cache and return its path.

    Already cached (and matching the lock): returned as is, unless `force`, which discards it first.
    The file is written to `<id>.pt.part` (kept across failures for resume), checked to load strictly
    and against the lock's recorded sha256, and only then renamed into place.
    """
    target, part = cache_file(model_id), part_file(model_id)
    url = model_url(model_id, base_url)  # a bad --base-url is refused before anything is touched
    limits = download_limits(model_id, read_lock())  # so is a damaged lock file
    if force:  # "download again from scratch"; the lock's recorded hash still applies
        target.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    elif target.is_file():
        return require_cached(model_id)
    home().mkdir(parents=True, exist_ok=True)
    _download(model_id, url, part, timeout, retries, progress, limits)
    try:
        check_loads(part, model_id)
    except CheckpointError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(f"downloaded file for {model_id} does not load, removed: {exc}") from None
    rec = read_lock().get(model_id)
    digest = sha256(part)
    if rec and rec.get("source") == "download" and rec.get("sha256") != digest:
        part.unlink(missing_ok=True)
        raise WeightsError(f"downloaded {model_id} has sha256 {digest[:12]}..., the lock recorded "
                           f"{rec['sha256'][:12]}...: refused and removed (if the upstream file really "
                           f"changed, delete its entry in {lock_path()} and pull again)")
    os.replace(part, target)
    if not rec or rec.get("sha256") != digest:
        record(model_id, target, url, "download")
    return target


