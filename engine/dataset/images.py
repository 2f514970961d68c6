"""Opening images the one way fld does everywhere: size limit first, EXIF orientation applied,
every mode converted to 8-bit RGB (transparency composited over white, 16-bit scaled down).
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

# fld checks the pixel count itself (open_image, with a limit the user sets), before decoding.
Image.MAX_IMAGE_PIXELS = None


def pil_open():
    """Pillow's own ``Image.open``. Importing ultralytics replaces it with one that, on a file
    Pillow cannot identify, tries to pip-install pi-heif (a network check) and raises ImportError
    offline; a file that is not an image must stay an ``ImageError`` in every process."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open) if patches is not None else Image.open


class ImageError(ValueError):
    """An image that cannot be used, with the reason."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray
    """Height x width x 3, uint8 RGB, upright."""
    format: str
    frames: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes to upright RGB; ImageError says why when that is impossible."""
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pil_open()(io.BytesIO(data)) as im:
                pixels = im.width * im.height
                if pixels > max_pixels:
                    raise ImageError(
                        f"{im.width}x{im.height} is {pixels:,} pixels, over the limit of {max_pixels:,} "
                        "(a decompression bomb?); raise --max-pixels to accept it"
                    )
                fmt, frames = im.format or "unknown", getattr(im, "n_frames", 1)
                im.seek(0)
                upright = ImageOps.exif_transpose(im)
                rgb = _to_rgb(upright)
                array = np.array(rgb, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError("cannot identify an image in the file (not an image, or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"cannot decode: {err}") from None
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError(f"decoded to an unexpected shape {array.shape}")
    return DecodedImage(np.ascontiguousarray(array), fmt, frames)
