#!/usr/bin/env python
"""Average two checkpoints of the same network, weight by weight ("model soup", Wortsman et al. 2022).

    python scripts/average_weights.py A.safetensors B.safetensors --alpha 0.5 --out AB.safetensors [--int8]

Writes (1 - alpha) * A + alpha * B for every floating tensor (integer buffers are taken from A).
Both files must hold the same kind and architecture (dropout may differ: it has no weights). The metadata is B's (its training record),
plus ``weight_average``: both files' names and sha256s and their weights, so the result can be
traced to what it was made from. B's last validation metrics describe B, not the average: they are
left out, or, with ``--dataset`` (a prepared dataset), replaced by the training run's own
validation of the stored average (scripts/val_checkpoint.py: the first 16 validation faces).
The model card's stage 3 / stage 4 average was made with it (measured, not shipped; see
weights/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

from sdesr_gui.core.errors import SdesrError  # noqa: E402
from sdesr_gui.core.models.checkpoint import STORAGE_KEYS, file_sha256, load_checkpoint, save_checkpoint  # noqa: E402


def _architecture(config: dict) -> dict:
    """A network config without its training-only settings (dropout has no weights, so a run
    trained with it averages with one trained without; the result keeps B's config)."""
    return {k: v for k, v in config.items() if k != "dropout"}


def average(a: Path, b: Path, alpha: float, out: Path, int8: bool = False, dataset: Path | None = None) -> dict:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    ma, meta_a = load_checkpoint(a)
    mb, meta_b = load_checkpoint(b)
    if meta_a["kind"] != meta_b["kind"] or _architecture(meta_a["config"]) != _architecture(meta_b["config"]):
        raise ValueError(f"{a.name} and {b.name} are not the same network (kind or architecture differ)")
    sa, sb = ma.state_dict(), mb.state_dict()
    mix = {k: ((1 - alpha) * sa[k].float() + alpha * sb[k].float()).to(sa[k].dtype)
           if sa[k].is_floating_point() else sa[k] for k in sa}
    ma.load_state_dict(mix)
    meta = {k: v for k, v in meta_b.items() if k not in STORAGE_KEYS and k != "metrics"}
    meta["weight_average"] = {"of": [{"file": a.name, "sha256": file_sha256(a), "weight": 1 - alpha},
                                     {"file": b.name, "sha256": file_sha256(b), "weight": alpha}]}

    def save() -> dict:
        return save_checkpoint(out, ma, kind=meta_b["kind"], config=meta_b["config"], metadata=meta,
                               dtype=torch.float16, quantize="int8" if int8 else None)

    written = save()
    if dataset is not None:  # validate the stored weights (int8 / fp16), then store the numbers with them
        from val_checkpoint import validate
        stored, stored_meta = load_checkpoint(out)
        meta["metrics"] = {k: v for k, v in validate(dataset, stored, stored_meta).items()
                           if isinstance(v, (int, float))}
        written = save()
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of B (0.5)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--int8", action="store_true", help="store conv / linear weights as int8 (as shipped)")
    ap.add_argument("--dataset", type=Path, default=None,
                    help="a prepared dataset: store the average's own validation metrics (16 faces)")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    if a.out.exists() and not a.overwrite:
        print(f"{a.out} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    try:
        average(a.a, a.b, a.alpha, a.out, a.int8, a.dataset)
    except (OSError, ValueError, SdesrError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {1 - a.alpha:g} x {a.a.name} + {a.alpha:g} x {a.b.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
