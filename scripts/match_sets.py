"""Build the gallery and probe folders of the README's Rank-1 table from a prepared dataset.

Gallery: the first source photo (by file name) of every identity in the dataset (train and
validation), one per identity, in ``OUT/gallery/<identity>/``; with ``--val-gallery`` of the
validation identities only (a gallery of the people being looked for; the full one adds every
training identity as a distractor, people the model has learned). Probes: up to ``--per-id``
other source photos of each validation identity, in ``OUT/probes/<identity>/``. The folders hold
symbolic links to the original photos (nothing is copied, the originals are only read), so
``sdesr eval-match --gallery OUT/gallery --probes OUT/probes`` aligns the raw photos itself.

    python scripts/match_sets.py celeba128 --out /tmp/match
    sdesr eval-match --gallery /tmp/match/gallery --probes /tmp/match/probes --samples 8 --json em.json
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path


def build(dataset: Path, out: Path, per_id: int = 3, val_gallery: bool = False) -> dict:
    rows = list(csv.DictReader(open(dataset / "manifest.csv", newline="")))
    by_id: dict[str, list[str]] = defaultdict(list)
    split: dict[str, str] = {}
    for r in rows:
        by_id[r["identity"]].append(r["source_file"])
        split[r["identity"]] = r["split"]
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; give a new folder")
    n_g = n_p = 0
    for ident, files in sorted(by_id.items(), key=lambda kv: kv[0]):
        if val_gallery and split[ident] != "val":
            continue
        files = sorted(set(files), key=lambda f: Path(f).name)
        (out / "gallery" / ident).mkdir(parents=True, exist_ok=True)
        (out / "gallery" / ident / Path(files[0]).name).symlink_to(Path(files[0]).resolve())
        n_g += 1
        if split[ident] != "val":
            continue
        for f in files[1:1 + per_id]:
            (out / "probes" / ident).mkdir(parents=True, exist_ok=True)
            (out / "probes" / ident / Path(f).name).symlink_to(Path(f).resolve())
            n_p += 1
    return {"gallery_photos": n_g, "probe_photos": n_p,
            "val_identities": sum(1 for v in split.values() if v == "val")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="a dataset made by `sdesr prepare` (manifest.csv)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-id", type=int, default=3, help="probe photos per validation identity (3)")
    ap.add_argument("--val-gallery", action="store_true",
                    help="gallery of the validation identities only (default: every identity)")
    a = ap.parse_args(argv)
    if not (a.dataset / "manifest.csv").is_file():
        print(f"error: {a.dataset} has no manifest.csv (make it with `sdesr prepare`)", file=sys.stderr)
        return 2
    print(build(a.dataset, a.out, a.per_id, a.val_gallery))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
