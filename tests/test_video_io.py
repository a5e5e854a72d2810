"""Still-image loading: every common format converts to HxWx3 uint8 RGB; bad input is
refused with a one-line InputError naming the file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sdesr_gui.core.video import (SUPPORTED_STILL_EXTENSIONS, InputError, iter_image_files,
                                  load_still, open_source)


def _rgb(h: int = 12, w: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ok(arr: np.ndarray, h: int = 12, w: int = 16) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3)


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff"])
def test_lossless_rgb(tmp_path: Path, ext: str) -> None:
    img = _rgb()
    p = tmp_path / f"a.{ext}"
    Image.fromarray(img).save(p)
    out = load_still(p)
    _ok(out)
    assert np.array_equal(out, img)


def test_jpeg(tmp_path: Path) -> None:
    img = np.full((12, 16, 3), (200, 50, 20), np.uint8)
    p = tmp_path / "a.jpg"
    Image.fromarray(img).save(p, quality=95)
    out = load_still(p)
    _ok(out)
    assert np.abs(out.astype(int) - img).max() <= 4


def test_gray_and_bilevel(tmp_path: Path) -> None:
    g = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_still(tmp_path / "g.png")
    _ok(out)
    assert np.array_equal(out[:, :, 0], g) and np.array_equal(out[:, :, 2], g)
    Image.fromarray(g > 100).convert("1").save(tmp_path / "b.png")
    out = load_still(tmp_path / "b.png")
    _ok(out)
    assert set(np.unique(out).tolist()) == {0, 255}


def test_alpha_is_composited_on_neutral_grey_and_said(tmp_path: Path) -> None:
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :8, 3] = 255  # left half opaque, right half transparent
    rgba[:, 8, 3] = 128  # one half-transparent column
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    notes: list = []
    out = load_still(tmp_path / "a.png", notes=notes)
    _ok(out)
    assert out[0, 0].tolist() == [200, 100, 50] and out[0, 15].tolist() == [128, 128, 128]
    assert out[0, 8].tolist() == [164, 114, 89]  # (v * 128 + 128 * 127 + 127) // 255
    assert notes == ["'a.png' has transparent pixels; they were composited on a neutral mid-grey "
                     "(128, 128, 128) before use."]
    assert load_still(tmp_path / "a.png")[0, 15].tolist() == [128, 128, 128]  # notes are optional
    # the source says so too, and its info() (the run record's input block) keeps it
    src = open_source(tmp_path / "a.png")
    assert src.notes == tuple(notes) and src.info()["notes"] == notes

    # fully opaque alpha changes nothing and is not worth a note
    la = Image.fromarray(np.stack([np.full((12, 16), 90, np.uint8),
                                   np.full((12, 16), 255, np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    notes = []
    out = load_still(tmp_path / "la.png", notes=notes)
    _ok(out)
    assert out[3, 3].tolist() == [90, 90, 90] and notes == []
    assert "notes" not in open_source(tmp_path / "la.png").info()
    # grey + alpha (LA) with a transparent part, and 16-bit RGBA (decoded by OpenCV)
    la = np.stack([np.full((12, 16), 90, np.uint8), np.full((12, 16), 255, np.uint8)], -1)
    la[:4, :, 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la2.png")
    notes = []
    out = load_still(tmp_path / "la2.png", notes=notes)
    assert out[0, 0].tolist() == [128] * 3 and out[6, 0].tolist() == [90] * 3 and len(notes) == 1
    bgra16 = np.zeros((4, 5, 4), np.uint16)
    bgra16[..., :3] = 65535
    bgra16[:, :2, 3] = 65535
    assert cv2.imwrite(str(tmp_path / "rgba16.png"), bgra16)
    notes = []
    out = load_still(tmp_path / "rgba16.png", notes=notes)
    assert out[0, 0].tolist() == [255] * 3 and out[0, 4].tolist() == [128] * 3 and len(notes) == 1


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    idx = np.zeros((12, 16), np.uint8)
    idx[:, 8:] = 1
    p = Image.fromarray(idx, "P")
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.save(tmp_path / "p.png")
    notes: list = []
    out = load_still(tmp_path / "p.png", notes=notes)
    _ok(out)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 15].tolist() == [0, 255, 0] and notes == []
    p.save(tmp_path / "pt.png", transparency=1)
    out = load_still(tmp_path / "pt.png", notes=notes)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 15].tolist() == [128, 128, 128]
    assert len(notes) == 1 and "'pt.png' has transparent pixels" in notes[0]
    p.save(tmp_path / "pt.gif", transparency=1)
    _ok(load_still(tmp_path / "pt.gif"))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load_still(tmp_path / "c.jpg")
    _ok(out)
    r, g, b = out[6, 8].tolist()
    assert r > 200 and g < 60 and b < 60  # cyan-free, magenta+yellow = red


def test_16bit_gray_scaling(tmp_path: Path) -> None:
    a = np.zeros((4, 4), np.uint16)
    a[0, 0], a[0, 1], a[0, 2] = 65535, 32768, 257
    assert cv2.imwrite(str(tmp_path / "g16.png"), a)
    out = load_still(tmp_path / "g16.png")
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [255] * 3
    assert out[0, 1].tolist() == [128] * 3
    assert out[0, 2].tolist() == [1] * 3
    assert out[1, 1].tolist() == [0] * 3


def test_16bit_rgb_png_from_cv2(tmp_path: Path) -> None:
    bgr = np.zeros((4, 5, 3), np.uint16)
    bgr[..., 0] = 65535  # blue
    bgr[..., 1] = 32768  # green
    bgr[..., 2] = 1000  # red
    assert cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    out = load_still(tmp_path / "c16.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [4, 128, 255]  # RGB order, rounded 16 -> 8 bit


def test_float_tiff(tmp_path: Path) -> None:
    f = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    out = load_still(tmp_path / "f.tif")
    assert out.shape == (4, 4, 3)
    assert out[0, 0, 0] == 0 and out[3, 3, 0] == 255
    Image.fromarray(f * 1000, "F").save(tmp_path / "f2.tif")  # scaled by its max
    assert np.array_equal(load_still(tmp_path / "f2.tif"), out)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = _rgb(6, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(img).save(tmp_path / "o.png", exif=exif)
    out = load_still(tmp_path / "o.png")
    assert out.shape == (10, 6, 3)
    assert np.array_equal(out, np.rot90(img, k=-1))


def _assert_input_error(path: Path, *, contains: str = "", **kw) -> None:
    with pytest.raises(InputError) as info:
        load_still(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    assert path.name in msg
    assert contains in msg.lower()


def test_missing_directory_empty(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nothing.png", contains="does not exist")
    (tmp_path / "folder.png").mkdir()
    _assert_input_error(tmp_path / "folder.png", contains="folder")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_input_error(tmp_path / "empty.png", contains="empty")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    _assert_input_error(tmp_path / "notes.png", contains="not an image")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated(tmp_path: Path, fmt: str, ext: str) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{ext}"
    Image.fromarray(img).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    _assert_input_error(cut, contains="truncated")


def test_too_small(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    _assert_input_error(tmp_path / "dot.png", contains="too small")
    Image.new("RGB", (1, 5)).save(tmp_path / "line.png")
    _assert_input_error(tmp_path / "line.png", contains="too small")
    _ok(load_still(_save(tmp_path / "two.png", (2, 2))), 2, 2)


def _save(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size).save(path)
    return path


def test_decompression_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # a few KB on disk, 400 megapixels
    assert bomb.stat().st_size < 200_000
    _assert_input_error(bomb, contains="too large")
    # the per-call limit also applies to ordinary images
    _assert_input_error(_save(tmp_path / "big.png", (100, 100)), contains="too large",
                        max_pixels=5000)
    # between Pillow's warning and error thresholds: the warning becomes an error
    warn_only = tmp_path / "warn.png"
    Image.new("1", (10000, 10000)).save(warn_only)
    _assert_input_error(warn_only, contains="too large", max_pixels=None)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="permissions not enforced")
def test_permission_denied(tmp_path: Path) -> None:
    p = _save(tmp_path / "locked.png", (4, 4))
    p.chmod(0)
    try:
        _assert_input_error(p, contains="permission")
    finally:
        p.chmod(0o644)


def test_iter_image_files(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.txt", ".hidden.png", "d.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    got = iter_image_files(tmp_path)
    assert [p.name for p in got] == ["a.JPG", "b.png", "d.tiff"]
    extra = tmp_path / "sub" / "e.png"
    got = iter_image_files([extra, tmp_path, tmp_path / "b.png"])
    assert [p.name for p in got] == ["e.png", "a.JPG", "b.png", "d.tiff"]
    with pytest.raises(InputError, match="nope"):
        iter_image_files([tmp_path / "nope"])
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match="No image"):
        iter_image_files(empty)
    assert ".png" in SUPPORTED_STILL_EXTENSIONS and ".jpg" in SUPPORTED_STILL_EXTENSIONS


def test_permission_error_is_input_error(tmp_path: Path, monkeypatch) -> None:
    """Same check without relying on file modes (root ignores them)."""
    p = _save(tmp_path / "locked2.png", (4, 4))

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", deny)
    _assert_input_error(p, contains="permission")
