#!/usr/bin/env python
"""Carry a prepared dataset to a borrowed GPU machine, whose calls take at most 64 MiB.

    python scripts/gpu_pack.py pack DATASET .gpu [--quality 82] [--val 64]
    python scripts/gpu_pack.py unpack .gpu .gpu/data          # on the GPU machine

``pack`` writes the training split and the first ``--val`` validation faces as WebP frames
(quality 82: about 2.8 KiB a face and 39 dB PSNR to the PNG frames) into one blob
(``images.bin`` + ``images.json``: one file instead of 9,500 keeps the transfer small) and a
manifest trimmed to the columns training reads. ``unpack`` writes them back as a prepared dataset
folder that ``sdesr train score`` opens. Face photos must never be committed: keep ``.gpu/``
ignored (``.gitignore`` lists it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from PIL import Image

COLUMNS = ["file", "identity", "split", "male", "beard", "eyeglasses", "scale"]


def pack(src: Path, dst: Path, quality: int, n_val: int) -> None:
    rows = list(csv.DictReader(open(src / "manifest.csv", newline="")))
    keep, nv = [], 0
    for r in rows:
        if r["split"] == "val":
            if nv >= n_val:
                continue
            nv += 1
        keep.append(r)
    dst.mkdir(parents=True, exist_ok=True)
    index, pos = [], 0
    with open(dst / "images.bin", "wb") as blob:
        for r in keep:
            buf = io.BytesIO()
            Image.open(src / r["file"]).convert("RGB").save(buf, "WEBP", quality=quality, method=6)
            name = Path(r["file"]).stem + ".webp"
            blob.write(buf.getvalue())
            index.append([name, pos, buf.tell()])
            pos += buf.tell()
            r["file"] = "images/" + name
    (dst / "images.json").write_text(json.dumps(index))
    with open(dst / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
    print(f"{len(keep)} faces ({nv} validation), {pos / 2 ** 20:.1f} MiB of WebP q{quality} in {dst}")


def unpack(src: Path, dst: Path) -> None:
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "manifest.csv").write_bytes((src / "manifest.csv").read_bytes())
    blob = (src / "images.bin").read_bytes()
    index = json.loads((src / "images.json").read_text())
    for name, off, n in index:
        (dst / "images" / name).write_bytes(blob[off:off + n])
    print(f"unpacked {len(index)} faces into {dst}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack")
    p.add_argument("dataset", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--quality", type=int, default=82)
    p.add_argument("--val", type=int, default=64, help="validation faces to carry (64)")
    u = sub.add_parser("unpack")
    u.add_argument("pack", type=Path)
    u.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.verb == "pack":
        if not (a.dataset / "manifest.csv").is_file():
            print(f"'{a.dataset}' is not a prepared dataset (no manifest.csv).", file=sys.stderr)
            return 2
        pack(a.dataset, a.out, a.quality, a.val)
    else:
        if not (a.pack / "images.bin").is_file():
            print(f"'{a.pack}' holds no pack (no images.bin).", file=sys.stderr)
            return 2
        unpack(a.pack, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
