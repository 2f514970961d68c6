"""Ingestion of real folders with every kind of bad file: each gets a row or a clear error,
and the rest of the folder is ingested."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from engine.dataset.images import ImageError, decode_image
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.sources import SourceError, list_source
from engine.dataset.store import Store
from schemas.hashing import content_id


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(w=40, h=20, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG whose EXIF says 'rotate 90 degrees clockwise' (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(photo(), "JPEG", exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    ramp = (np.arange(30 * 10, dtype=np.uint16).reshape(10, 30) * 200)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    return encode(image, "PNG")


def palette_png_with_transparency() -> bytes:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((5, 5), 1)
    return encode(im, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("P", (12, 12), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


GOOD = {
    "plain.png": lambda: encode(photo(), "PNG"),
    "photo.jpg": lambda: encode(photo(seed=1), "JPEG"),
    "pic.webp": lambda: encode(photo(seed=2), "WEBP"),
    "pic.bmp": lambda: encode(photo(seed=3), "BMP"),
    "pic.tiff": lambda: encode(photo(seed=4), "TIFF"),
    "tiny.png": lambda: encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    "rotated.jpg": exif_rotated_jpeg,
    "cmyk.jpg": lambda: encode(photo(seed=5).convert("CMYK"), "JPEG"),
    "deep.png": sixteen_bit_png,
    "palette.png": palette_png_with_transparency,
    "grey.png": lambda: encode(photo(seed=6).convert("L"), "PNG"),
    "alpha.png": lambda: encode(photo(seed=7).convert("RGBA"), "PNG"),
    "anim.gif": animated_gif,
}
BAD = {
    "empty.png": (lambda: b"", "empty"),
    "text.jpg": (lambda: b"this is not an image\n", "cannot identify"),
    "cut.jpg": (lambda: encode(photo(200, 100, seed=8), "JPEG")[:300], "cannot decode"),
    "cut.png": (lambda: encode(photo(200, 100, seed=9), "PNG")[:200], "cannot decode"),
}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for name, make in GOOD.items():
        (root / name).write_bytes(make())
    for name, (make, _) in BAD.items():
        (root / "sub" / name).write_bytes(make())
    (root / "copy-of-plain.png").write_bytes((root / "plain.png").read_bytes())
    (root / "notes.txt").write_text("not an image suffix: skipped")
    os.symlink("loop.png", root / "loop.png")
    os.symlink(root / "missing.png", root / "dangling.png")
    os.mkfifo(root / "pipe.png")
    return root


def run(folder, tmp_path, **config):
    store = Store(tmp_path / "ds", create=True)
    summary = ingest(str(folder), store, IngestConfig(**config))
    rows = {os.path.basename(r["uri"]): r for r in store.read("images").to_pylist()}
    return store, summary, rows


def test_folder_with_every_bad_file(folder, tmp_path):
    store, summary, rows = run(folder, tmp_path)
    rows["plain.png"] = rows.pop("copy-of-plain.png")  # same bytes: the first name in order is kept
    for name in GOOD:
        assert rows[name]["status"] == "ok", (name, rows[name]["error"])
    for name, (_, fragment) in BAD.items():
        assert rows[name]["status"] == "error" and fragment in rows[name]["error"], rows[name]
    assert "symbolic link loop" in rows["loop.png"]["error"]
    assert "No such file" in rows["dangling.png"]["error"]
    assert "not a regular file" in rows["pipe.png"]["error"]
    assert summary.ok == len(GOOD) and summary.errors == len(BAD) + 3
    assert summary.skipped_files == 1
    assert [(os.path.basename(a), os.path.basename(b)) for a, b in summary.duplicates] == [
        ("plain.png", "copy-of-plain.png")]
    assert len(rows) == len(GOOD) + len(BAD) + 3  # the duplicate is counted once


def test_sizes_after_exif_rotation_and_ids_are_content_hashes(folder, tmp_path):
    _, _, rows = run(folder, tmp_path)
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (20, 40)
    assert (rows["tiny.png"]["width"], rows["tiny.png"]["height"]) == (1, 1)
    assert rows["photo.jpg"]["image_id"] == content_id((folder / "photo.jpg").read_bytes())
    assert rows["anim.gif"]["format"] == "GIF"


def test_decompression_bomb_is_refused_over_a_configurable_limit(tmp_path):
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(encode(Image.new("1", (12_000, 12_000)), "PNG"))
    (folder / "fine.png").write_bytes(encode(photo(), "PNG"))
    assert (folder / "bomb.png").stat().st_size < 1_000_000
    _, summary, rows = run(folder, tmp_path, max_pixels=100_000_000)
    assert "144,000,000 pixels, over the limit of 100,000,000" in rows["bomb.png"]["error"]
    assert rows["fine.png"]["status"] == "ok" and summary.ok == 1


@pytest.mark.parametrize(
    "make, expected",
    [
        (sixteen_bit_png, lambda px: px[..., 0].max() > 200 and px[..., 0].min() == 0),
        (palette_png_with_transparency, lambda px: (px[0, 0] == 255).all() and (px[5, 5] == [0, 0, 255]).all()),
        (lambda: encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"), lambda px: px[0, 0, 0] > 200 and px[0, 0, 1] < 60),
        (lambda: encode(Image.new("LA", (3, 3), (0, 0)), "PNG"), lambda px: (px == 255).all()),
    ],
)
def test_modes_become_sensible_rgb(make, expected):
    image = decode_image(make())
    assert image.pixels.dtype == np.uint8 and image.pixels.shape[2] == 3
    assert expected(image.pixels)


def test_rerun_is_idempotent_and_other_sources_do_not_duplicate(folder, tmp_path):
    store, first, _ = run(folder, tmp_path)
    again = ingest(str(folder), store, IngestConfig())
    assert again.ok == first.ok and len(store.read("images")) == first.ok + first.errors
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n\n{folder / 'plain.png'}\nfile://{folder / 'photo.jpg'}\n")
    third = ingest(str(listing), store, IngestConfig())
    assert third.already_ingested == 2 and third.ok == 0


def test_list_file_with_relative_and_missing_paths(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(photo(), "PNG"))
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nnope.png\n")
    store = Store(tmp_path / "ds", create=True)
    summary = ingest(str(listing), store, IngestConfig(split="gold"))
    assert summary.ok == 1 and summary.errors == 1
    assert set(store.read("images").column("split").to_pylist()) == {"gold"}


def test_missing_source_writes_nothing(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    with pytest.raises(SourceError, match="does not exist"):
        ingest(str(tmp_path / "nowhere"), store)
    assert store.files("images") == []


@pytest.mark.parametrize("kwargs, fragment", [({"split": "train"}, "split must be one of"),
                                              ({"max_pixels": 0}, "max_pixels"), ({"shard_size": 0}, "shard_size")])
def test_bad_ingest_config(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        IngestConfig(**kwargs)


def test_shards_split_large_sources(folder, tmp_path):
    store, summary, _ = run(folder, tmp_path, shard_size=4)
    assert len(summary.shards) == len(store.files("images")) > 3


def test_list_source_skips_symlinked_folders(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.png").write_bytes(b"")
    os.symlink(tmp_path, tmp_path / "real" / "up")  # a folder loop
    uris, _ = list_source(tmp_path / "real")
    assert [os.path.basename(u) for u in uris] == ["x.png"]


def test_unidentified_bytes():
    with pytest.raises(ImageError, match="cannot identify"):
        decode_image(struct.pack("8B", *range(8)))


def test_unidentified_bytes_stay_an_image_error_once_ultralytics_is_imported():
    """ultralytics patches PIL.Image.open on import (an unidentified file makes it try to install
    pi-heif, then raise ImportError offline): a round's worker that runs YOLO decodes images too."""
    import ultralytics.utils.patches  # noqa: F401 (the patch is the point)

    with pytest.raises(ImageError, match="cannot identify"):
        decode_image(struct.pack("8B", *range(8)))
