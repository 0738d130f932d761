"""Fetching a model's checkpoint files from the URLs its card names (``repaint models fetch``).

A card's ``url:`` (one or more; a classifier's own ``url:`` inside ``classifier:``) says where a
file comes from; ``--from`` replaces them with a mirror (a base URL or folder: the file's name is
added) or one exact URL or local path. A file is downloaded into the first writable weights folder
as a hidden ``.<file>.part``, resumed with an HTTP Range request after a dropped connection (here
or in a later run), checked (the card's sha256 where it has one, else the strict load: every key
and shape of the architecture the card describes), and only then renamed to its name, so a
checkpoint that ``find_file`` sees is always complete. A corrupt download is removed.

Google Drive (RePaint's own checkpoints) answers a large file with a confirmation page instead
of the file; it is followed here with the standard library (its cookie, or the form's fields
and action), so no extra package is needed. Standard library only, besides the strict check.
"""
from __future__ import annotations

import html
import http.client
import ipaddress
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Callable, Optional

from ..files import sha256_file
from ..resources import user_weights_dirs
from .cards import ModelCard

CHUNK = 1 << 20
ATTEMPTS = 4  # tries per file: each resumes where the previous one stopped
TIMEOUT_S = 60.0  # no byte for this long: the connection counts as dropped (and is resumed)


class FetchError(Exception):
    """A download that cannot finish; the message is one line (file, problem, what to do)."""


@dataclass
class Target:
    """One file of a model: the checkpoint, or a guided model's classifier."""
    file: str
    urls: list
    sha256: Optional[str]
    role: str  # "model" or "classifier"


class Progress:
    """What a download reports; the CLI shows it as a Rich bar. ``total`` None: size unknown."""

    def start(self, name: str, total: Optional[int], done: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> None: ...


def as_list(value) -> list:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def targets(card: ModelCard, classifier: bool = True) -> list[Target]:
    """The files a card's model needs: its checkpoint, and its classifier (``classifier``)."""
    found = [Target(card.file, card.urls, card.sha256, "model")]
    if classifier and card.classifier and card.classifier.get("file"):
        c = card.classifier
        found.append(Target(c["file"], as_list(c.get("url")), c.get("sha256"), "classifier"))
    return found


def missing(card: ModelCard, classifier: bool = True) -> list[Target]:
    """The card's files that no weights folder holds yet."""
    return [t for t in targets(card, classifier) if card.find_file(t.file) is None]


def fetch_dir() -> Path:
    """The first weights folder that exists or can be made, and is writable."""
    tried = []
    for d in user_weights_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            tried.append(str(d))
            continue
        if os.access(d, os.W_OK | os.X_OK):
            return d
        tried.append(str(d))
    raise FetchError(f"no writable weights folder ({', '.join(tried)}); set $REPAINT_WEIGHTS to a folder you can "
                     f"write")


def drive_file_id(url: str) -> Optional[str]:
    """The file id of a Google Drive link (``/uc?id=ID``, ``/open?id=ID``, ``/file/d/ID/...``), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com"):
        return None
    ids = urllib.parse.parse_qs(parts.query).get("id")
    if ids:
        return ids[0]
    m = re.search(r"/file/d/([\w-]+)", parts.path)
    return m.group(1) if m else None


def direct_url(url: str) -> str:
    """The URL that serves the file itself: a Drive link becomes its download URL."""
    file_id = drive_file_id(url)
    if file_id is None:
        return url
    return f"https://drive.google.com/uc?export=download&id={urllib.parse.quote(file_id)}"


def sources(target: Target, from_: Optional[str], several: bool) -> list[str]:
    """Where to fetch ``target`` from: ``--from`` (a base URL or folder ending in '/', a folder, or one exact
    URL or file for a model of one file), else its card's URLs."""
    if not from_:
        return target.urls
    is_url = "://" in from_
    if from_.endswith("/") or (not is_url and Path(from_).is_dir()):
        return [from_.rstrip("/") + "/" + urllib.parse.quote(target.file) if is_url else str(Path(from_) / target.file)]
    if several:
        raise FetchError(f"--from {from_}: this model has {several} files; give a folder or a base URL ending in '/' "
                         f"that holds them by name")
    return [from_]


def fetch_target(target: Target, dest_dir: Path, urls: list, progress: Progress,
                 check: Optional[Callable[[Path], None]] = None) -> tuple[Path, str]:
    """Download ``target`` into ``dest_dir`` from the first of ``urls`` that answers; (its path, its sha256).

    The partial file ``.<file>.part`` is kept after a dropped connection (the next try, or the next
    run, resumes it) and removed when the finished file fails its check.
    """
    if not urls:
        raise FetchError(f"{target.file}: its card names no url; add 'url:' to the card, or pass --from URL")
    final = dest_dir / target.file
    part = dest_dir / f".{target.file}.part"
    with _exclusive(part):
        problems = []
        for url in urls:
            try:
                _download(url, part, target.file, progress)
                break
            except FetchError as e:
                problems.append(str(e))
        else:
            raise FetchError(problems[-1] if len(problems) == 1 else "; ".join(problems))
        progress.note(f"{target.file}: checking")
        digest = sha256_file(part)
        try:
            if target.sha256:
                if digest != target.sha256.lower():
                    raise FetchError(f"{target.file}: sha256 {digest} differs from its card's {target.sha256}; the "
                                     f"download was removed; try again, or --from another source")
            elif check is not None:
                check(part)
        except Exception:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, final)
    return final, digest


class _exclusive:
    """A lock beside the partial file, so two runs never append to one download (POSIX; elsewhere none)."""

    def __init__(self, part: Path):
        self.path = part.with_name(part.name + ".lock")
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise FetchError(f"{self.path.name[1:-10]}: another repaint is downloading it into {self.path.parent}; "
                             f"wait for it to finish") from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
        return False


def _download(url: str, part: Path, name: str, progress: Progress) -> None:
    """``url`` (or a local path) into ``part``, resuming it; retried where the connection drops."""
    if "://" not in url or url.startswith("file://"):
        _copy_local(Path(urllib.parse.urlsplit(url).path if url.startswith("file://") else url), part, name, progress)
        return
    last = ""
    for _ in range(ATTEMPTS):
        try:
            _http_once(direct_url(url), part, name, progress)
            return
        except _Dropped as e:
            last = str(e)
            progress.note(f"{name}: {last}; resuming")
    raise FetchError(f"{name}: {last} ({ATTEMPTS} tries); rerun to resume the download, or --from a mirror")


class _Dropped(Exception):
    """The connection ended before the file did: worth another try from where it stopped."""


def _copy_local(source: Path, part: Path, name: str, progress: Progress) -> None:
    if not source.is_file():
        raise FetchError(f"{source}: no such file (--from a local path names the checkpoint or its folder)")
    total = source.stat().st_size
    progress.start(name, total, 0)
    with open(source, "rb") as src, open(part, "wb") as dst:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dst.write(chunk)
            progress.advance(len(chunk))
    progress.finish()


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers = [urllib.request.HTTPCookieProcessor(CookieJar())]  # Drive's confirmation cookie
    if _is_loopback(urllib.parse.urlsplit(url).hostname):
        handlers.append(urllib.request.ProxyHandler({}))  # a local mirror is never reached through a proxy
    return urllib.request.build_opener(*handlers)


def _is_loopback(host: Optional[str]) -> bool:
    if host in (None, "localhost"):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_once(url: str, part: Path, name: str, progress: Progress) -> None:
    """One request: the rest of the file from ``part``'s size on (Range), or all of it."""
    opener = _opener(url)
    response = _open_file_response(opener, url, part, name)
    with response:
        offset, total = _resume_point(response, part, name)
        progress.start(name, total, offset)
        got = offset
        try:
            out = open(part, "ab" if offset else "wb")
        except OSError as e:
            raise FetchError(f"{part}: cannot write ({e.strerror or e}); set $REPAINT_WEIGHTS to another "
                             f"folder") from None
        with out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException):  # reset, timeout, a broken chunk
                    progress.finish()
                    raise _Dropped(f"the connection dropped at {got:,} of {_size(total)} bytes") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    progress.finish()
                    raise FetchError(f"{part}: cannot write ({e.strerror or e}); free space or set $REPAINT_WEIGHTS "
                                     f"to another folder") from None
                got += len(chunk)
                progress.advance(len(chunk))
        progress.finish()
    if total is not None and got != total:
        if got > total:
            part.unlink(missing_ok=True)
            raise FetchError(f"{name}: the server sent {got:,} bytes, more than the {total:,} it announced; the "
                             f"download was removed; try again, or --from another source")
        raise _Dropped(f"the connection dropped at {got:,} of {total:,} bytes")


def _size(total: Optional[int]) -> str:
    return f"{total:,}" if total is not None else "an unknown number of"


def _open_file_response(opener, url: str, part: Path, name: str, hops: int = 3):
    """The response that carries the file itself, past a Drive confirmation page; HTTP errors as FetchError."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "repaint-cli", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left past the partial file: it is complete, or too long
            total = _content_range_total(e.headers.get("Content-Range"))
            if total == offset:
                return _Complete(offset)
            part.unlink(missing_ok=True)
            if total is not None and total > offset:  # it announces bytes it cannot send: trying again will not help
                raise FetchError(f"{name}: {url} announces {total:,} bytes but has no more past {offset:,}; the "
                                 f"download was removed; try again later, or --from a mirror") from None
            raise _Dropped("the partial file is longer than the server's file; starting again") from None
        raise FetchError(f"{name}: {url} answered HTTP {e.code} ({e.reason}); check the card's url, or --from a "
                         f"mirror") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise _Dropped(f"cannot reach {urllib.parse.urlsplit(url).netloc} ({reason})") from None
    if not response.headers.get_content_type().startswith("text/html") or name.endswith((".html", ".htm")):
        return response
    page = response.read(1 << 20).decode("utf-8", "replace")
    response.close()
    follow = _confirmation_url(page, url, opener)
    if follow is None or hops == 0:
        raise FetchError(f"{name}: {url} answered with a web page, not the file ({_page_problem(page)}); "
                         f"try later, or --from a mirror")
    return _open_file_response(opener, follow, part, name, hops - 1)


class _Complete:
    """Stands for a response when the partial file already holds the whole file (HTTP 416)."""

    def __init__(self, size: int):
        self.size = size
        self.headers = {}

    def read(self, n=-1) -> bytes:
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _resume_point(response, part: Path, name: str) -> tuple[int, Optional[int]]:
    """(bytes already in ``part`` that the response continues, the file's total size or None)."""
    if isinstance(response, _Complete):
        return response.size, response.size
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        offset = part.stat().st_size if part.is_file() else 0
        if m is None or int(m.group(1)) != offset:
            raise _Dropped("the server resumed from another byte than asked; starting again")
        total = int(m.group(2)) if m.group(2) != "*" else (offset + length if length is not None else None)
        return offset, total
    return 0, length  # 200: the whole file (a server without ranges): start again


def _content_range_total(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes \*/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _confirmation_url(page: str, url: str, opener) -> Optional[str]:
    """Where Drive's "file too large to scan for viruses" page leads: its download form (action and
    hidden fields), else its link with a confirm token, else the token of its download_warning cookie."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*>(.*?)</form>', page, re.S) or \
        re.search(r"<form[^>]*>(.*?)</form>", page, re.S)
    if form:
        action = re.search(r'action="([^"]+)"', form.group(0))
        fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(1)))
        if action and "confirm" in fields:
            target = urllib.parse.urljoin(url, html.unescape(action.group(1)))
            return target + "?" + urllib.parse.urlencode({k: html.unescape(v) for k, v in fields.items()})
    link = re.search(r'href="([^"]*confirm=[\w-]+[^"]*)"', page)
    if link:
        return urllib.parse.urljoin(url, html.unescape(link.group(1)))
    for handler in opener.handlers:
        jar = getattr(handler, "cookiejar", None)
        for cookie in jar or []:
            if cookie.name.startswith("download_warning"):
                return _with_query(url, confirm=cookie.value)
    return None


def _with_query(url: str, **extra) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(extra)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _page_problem(page: str) -> str:
    """What a web page that came instead of the file says, briefly (Drive's quota page, or its title)."""
    if re.search(r"quota|too many users", page, re.I):
        return "Google Drive's download quota for this file is used up for now"
    title = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    return f"'{html.unescape(title.group(1)).strip()[:80]}'" if title else "no file in it"


def human_size(n: Optional[int]) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def strict_check(card: ModelCard, target: Target) -> Callable[[Path], None]:
    """For a file without a recorded sha256: it must load into the architecture its card describes, every key
    and shape (checked on the meta device: no memory for a second copy of the weights)."""
    def check(path: Path) -> None:
        from .checkpoints import ModelError, check_state_matches, read_state_dict

        try:
            check_state_matches(_architecture(card, target), read_state_dict(path), f"{target.file} (downloaded)")
        except ModelError as e:  # named by the checkpoint, not by its hidden partial file
            reason = str(e).replace(str(path), f"{target.file} (downloaded)").replace("; check the path", "")
            raise FetchError(f"{reason}; the download was removed; try again, or --from another source") from None
    return check


def _architecture(card: ModelCard, target: Target):
    import torch

    from .unet import ClassifierConfig, EncoderUNetModel, UNetConfig, UNetModel

    with torch.device("meta"):
        if target.role == "classifier":
            hp = {**card.classifier.get("hparams", {}), "image_size": card.hparams.get("image_size"),
                  "num_classes": card.hparams.get("num_classes", 1000), "classifier_use_fp16": False}
            return EncoderUNetModel(ClassifierConfig.from_dict(hp))
        return UNetModel(UNetConfig.from_dict({**card.hparams, "use_fp16": False}))
