"""Hashes, atomic writes, deterministic PNGs, path containment and run records."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdesr_gui.core import provenance as pv


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_hashes(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert pv.sha256_bytes(b"abc") == expected
    assert pv.sha256_file(f) == expected


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    pv.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    pv.atomic_write_text(tmp_path / "b.txt", "héllo")
    pv.write_json_atomic(tmp_path / "c.json", {"b": 1, "a": [1, 2], "p": tmp_path})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    text = (tmp_path / "c.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text)["p"] == str(tmp_path)
    pv.atomic_write_text(tmp_path / "b.txt", "again")  # overwrite
    assert (tmp_path / "b.txt").read_text() == "again"
    assert _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt", "c.json"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        pv.write_json_atomic(target, {"bad": object()})
    assert target.read_text() == "old"

    with pytest.raises(FileNotFoundError):
        pv.atomic_write_bytes(tmp_path / "missing_dir" / "x.bin", b"1")
    assert _leftovers(tmp_path) == []


def test_png_deterministic_and_hash_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
    h1 = pv.atomic_save_png(tmp_path / "one.png", img)
    h2 = pv.atomic_save_png(tmp_path / "two.png", img.copy())
    assert h1 == h2 == pv.sha256_file(tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")), img)
    assert _leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        pv.encode_png(img.astype(np.float32))


def test_png_label_says_generated_or_derived(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pv.atomic_save_png(tmp_path / "gen.png", img, generated=True)
    pv.atomic_save_png(tmp_path / "crop.png", img, generated=False)
    pv.atomic_save_png(tmp_path / "plain.png", img)
    gen, crop, plain = (Image.open(tmp_path / n) for n in ("gen.png", "crop.png", "plain.png"))
    assert gen.text == {"Software": pv.PNG_SOFTWARE, "Comment": pv.GENERATED_NOTICE}
    assert crop.text == {"Software": pv.PNG_SOFTWARE, "Comment": pv.DERIVED_NOTICE}
    assert plain.text == {}  # unlabelled: training grids, prepared datasets
    for im in (gen, crop, plain):
        assert np.array_equal(np.asarray(im), img)  # the label never touches the pixels
    assert pv.encode_png(img, generated=True) == pv.encode_png(img.copy(), generated=True)  # deterministic


def test_is_inside(tmp_path: Path) -> None:
    parent = tmp_path / "evidence"
    (parent / "sub").mkdir(parents=True)
    assert pv.is_inside(parent / "sub" / "out.png", parent)
    assert pv.is_inside(parent, parent)
    assert pv.is_inside(parent / "sub" / ".." / "x.png", parent)
    assert not pv.is_inside(tmp_path / "evidence2" / "x.png", parent)
    assert not pv.is_inside(tmp_path / "out", parent)
    assert not pv.is_inside(parent / ".." / "out", parent)
    link = tmp_path / "link"
    link.symlink_to(parent, target_is_directory=True)
    assert pv.is_inside(link / "x.png", parent)  # symlinks are resolved


def test_versions_device_and_record(tmp_path: Path) -> None:
    v = pv.versions()
    for key in ("python", "sdesr_gui", "torch", "numpy", "pillow", "opencv", "platform"):
        assert key in v and v[key]
    d = pv.device_info("cpu")
    assert d["device"] == "cpu" and d["cpu"] and d["cpu_count"] >= 1
    src = tmp_path / "in.png"
    src.write_bytes(b"pretend")
    rec = pv.make_run_record("sr", inputs=[src], seed=7, sampler={"steps": 10, "r": 0.16})
    rec.add_output(tmp_path / "out.png", "ab" * 32)
    out = rec.write(tmp_path / "run.json")
    loaded = json.loads(out.read_text())
    assert loaded["inputs"][0]["sha256"] == pv.sha256_bytes(b"pretend")
    assert loaded["seed"] == 7 and loaded["sampler"]["r"] == 0.16
    assert "not an identification" in loaded["notice"]
    assert loaded["created_utc"].endswith("Z")
    assert _leftovers(tmp_path) == []
