"""Where images come from: a local folder, or a file listing paths and URIs (file://, or any
filesystem pyarrow can open, such as s3:// when credentials are configured)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

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
        import pyarrow.fs as pafs

        filesystem, inner = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(inner) as stream:
            return stream.read()
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


def list_source(source: str | Path) -> tuple[list[str], int]:
    """The image URIs of a folder (recursively, sorted; symlinked folders are not followed) or of
    a list file (one path or URI a line; blank lines and ``#`` comments skipped), and how many
    files of a folder were skipped for not having an image suffix."""
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
        uris = []
        for number, line in enumerate(root.read_text(errors="replace").splitlines(), 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            local = _local(entry)
            if local is not None and not local.is_absolute():
                entry = str((root.parent / local).absolute())
            uris.append(entry)
        return uris, 0
    raise SourceError(f"{root} does not exist: give a folder of images or a file listing image paths/URIs")


def load_rgb(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The upright RGB pixels (height x width x 3, uint8) of the image at ``uri``."""
    return decode_image(read_bytes(uri), max_pixels).pixels
