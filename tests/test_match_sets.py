"""scripts/match_sets.py: the gallery and probe folders of the README's Rank-1 tables."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import match_sets  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    """A manifest of 3 training and 2 validation identities, 4 source photos each (empty files)."""
    src = tmp_path / "src"
    src.mkdir()
    ds = tmp_path / "ds"
    ds.mkdir()
    rows = []
    for k, (ident, split) in enumerate([("10", "train"), ("11", "train"), ("12", "train"),
                                        ("20", "val"), ("21", "val")]):
        for j in range(4):
            f = src / f"{k:02d}{j:04d}.jpg"
            f.write_bytes(b"")
            rows.append({"file": f"images/{f.stem}.png", "identity": ident, "split": split,
                         "source_file": str(f)})
    with open(ds / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return ds


def _tree(d: Path) -> dict[str, list[str]]:
    return {p.name: sorted(x.name for x in p.iterdir()) for p in sorted(d.iterdir())}


def test_full_and_validation_galleries(dataset, tmp_path):
    full = match_sets.build(dataset, tmp_path / "full", per_id=2)
    assert full == {"gallery_photos": 5, "probe_photos": 4, "val_identities": 2}
    g = _tree(tmp_path / "full" / "gallery")
    assert sorted(g) == ["10", "11", "12", "20", "21"] and g["20"] == ["030000.jpg"]
    # probes: the next photos of the validation identities, never their gallery photo
    assert _tree(tmp_path / "full" / "probes") == {"20": ["030001.jpg", "030002.jpg"],
                                                   "21": ["040001.jpg", "040002.jpg"]}
    val = match_sets.build(dataset, tmp_path / "val", per_id=2, val_gallery=True)
    assert val == {"gallery_photos": 2, "probe_photos": 4, "val_identities": 2}
    assert _tree(tmp_path / "val" / "gallery") == {"20": ["030000.jpg"], "21": ["040000.jpg"]}
    assert _tree(tmp_path / "val" / "probes") == _tree(tmp_path / "full" / "probes")
    # links to the originals, nothing copied
    link = tmp_path / "val" / "gallery" / "20" / "030000.jpg"
    assert link.is_symlink() and link.resolve() == (tmp_path / "src" / "030000.jpg").resolve()


def test_refuses_a_folder_in_use(dataset, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("keep")
    with pytest.raises(SystemExit, match="not empty"):
        match_sets.build(dataset, tmp_path / "used")
    assert (tmp_path / "used" / "x").read_text() == "keep"
    assert match_sets.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
