"""Where images come from: a local folder, an ``s3://bucket/prefix/`` (every image under it), or
a list file (local or in S3) of paths and URIs: local paths, ``file://`` and ``s3://``. Any other
scheme is an unreadable image (an error row), never an error of the whole source."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from engine.dataset import s3
from engine.dataset.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_image

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """A source that cannot be listed at all (the run stops before writing anything)."""


def _local(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        return Path(uri)
    return None


def read_bytes(uri: str) -> bytes:
    """The bytes of one image; OSError (with a clear message) when it cannot be read."""
    path = _local(uri)
    if path is None:
        if s3.is_s3(uri):
            return s3.read(uri)
        raise OSError(f"unsupported URI scheme {urlparse(uri).scheme!r} in {uri!r}: fld reads local paths, "
                      "file:// and s3:// (S3-compatible servers through AWS_ENDPOINT_URL)")
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == 40:
            raise OSError(f"symbolic link loop at {path}") from None
        raise OSError(f"cannot read {path}: {err.strerror}") from None
    if not stat.S_ISREG(mode):
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as handle:
        return handle.read()


def _has_image_suffix(name: str) -> bool:
    return Path(urlparse(name).path if "://" in name else name).suffix.lower() in IMAGE_SUFFIXES


def _list_lines(text: str, base: Path | None) -> list[str]:
    """The entries of a list file: one path or URI a line, blank lines and ``#`` comments
    skipped; a relative local path is taken from the list's own folder (``base``)."""
    uris = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        local = _local(entry)
        if local is not None and not local.is_absolute():
            if base is None:
                raise SourceError(f"the S3 list names a local relative path ({entry!r}): use absolute paths or URIs")
            entry = str((base / local).absolute())
        uris.append(entry)
    return uris


def _list_s3(source: str) -> tuple[list[str], int]:
    try:
        what = s3.kind(source)
        if what == "file":
            if _has_image_suffix(source):
                return [source], 0
            return _list_lines(s3.read(source).decode(errors="replace"), None), 0
        if what == "missing":
            raise SourceError(f"{source} holds nothing: no object and no prefix of that name")
        found = s3.list_prefix(source)
    except OSError as err:
        raise SourceError(str(err)) from None
    images = [uri for uri in found if _has_image_suffix(uri)]
    if len(images) < len(found):
        log.info("%d object(s) under %s skipped: not an image suffix", len(found) - len(images), source)
    return images, len(found) - len(images)


def list_source(source: str | Path) -> tuple[list[str], int]:
    """The image URIs of a folder (recursively, sorted; symlinked folders are not followed), of
    an S3 prefix (recursively, sorted), or of a list file (one path or URI a line; blank lines and
    ``#`` comments skipped), and how many files were skipped for not having an image suffix."""
    if isinstance(source, str) and "://" in source and _local(source) is None:
        if s3.is_s3(source):
            return _list_s3(source)
        raise SourceError(f"unsupported source {source!r}: give a folder, a list file, or s3://bucket/prefix/")
    root = Path(source).expanduser()
    if root.is_dir():
        found, skipped = [], 0
        for folder, dirs, files in os.walk(root, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    found.append(str(Path(folder, name).absolute()))
                else:
                    skipped += 1
        if skipped:
            log.info("%d file(s) in %s skipped: not an image suffix (%s)", skipped, root, " ".join(sorted(IMAGE_SUFFIXES)))
        return found, skipped
    if root.is_file():
        return _list_lines(root.read_text(errors="replace"), root.parent), 0
    raise SourceError(f"{root} does not exist: give a folder of images or a file listing image paths/URIs")


def load_rgb(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The upright RGB pixels (height x width x 3, uint8) of the image at ``uri``."""
    return decode_image(read_bytes(uri), max_pixels).pixels
