#!/usr/bin/env python
"""Prepare the CelebA training folder: 128x128 face frames + manifest (train/val by identity).

Reads /work/shared/data/celeba/{aligned,wild} in place (never copies them into the repo) and
writes the derived dataset outside the repo (default /work/data/celeba128). Re-running skips
images already prepared. Usage:

    python scripts/prepare_celeba.py [--celeba DIR] [--out DIR] [--val-fraction 0.1] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba", type=Path, default=Path("/work/shared/data/celeba"))
    ap.add_argument("--out", type=Path, default=Path("/work/data/celeba128"))
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--min-prob", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for MTCNN (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args(argv)

    import torch

    from sdesr_gui.core.datasets import prepare_dataset
    from sdesr_gui.core.video import InputError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    c = args.celeba
    sources = [p for p in (c / "aligned", c / "wild") if p.is_dir()]
    if not sources:
        print(f"error: no aligned/ or wild/ folder in {c}", file=sys.stderr)
        return 2
    attrs = [p for p in (c / "attributes_celeba.csv", c / "attributes_teacher.csv") if p.is_file()]
    ids = c / "identities.csv"
    t0 = time.time()
    last = [0.0]

    def progress(done: int, total: int, info: dict) -> None:
        now = time.time()
        if now - last[0] > 30 or done == total:
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            print(f"{done}/{total} prepared {info['prepared']} reused {info['reused']} "
                  f"failed {info['failed']}  ({rate:.1f} img/s)", flush=True)

    try:
        report = prepare_dataset(sources, args.out, identities_csv=ids if ids.is_file() else None,
                                 attributes_csvs=attrs, val_fraction=args.val_fraction,
                                 min_prob=args.min_prob, progress=progress, log=print)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"report: {args.out / 'prepare_report.json'}  ({report.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
