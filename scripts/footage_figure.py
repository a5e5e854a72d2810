#!/usr/bin/env python
"""Before / after figure of the bundled sample clip's face (noisy, compressed footage).

    python scripts/footage_figure.py --out docs/footage_before_after.png \
        --model "v2 (clean-trained)=old.safetensors" --model "footage 8x=weights/sdesr_ve_8x.safetensors" \
        [--model "16x=weights/sdesr_ve_16x.safetensors"] [--frame 30] [--samples 2] [--seed 0]
    python scripts/footage_figure.py --out docs/footage_start_sigma.png \
        --model "posterior=weights/sdesr_ve_8x_footage.safetensors" \
        --model "start at 0.5=weights/sdesr_ve_8x_footage.safetensors@0.5"

A model given as FILE@SIGMA samples from the mean estimate diffused to noise level SIGMA
(``--start-sigma``) instead of from pure noise.

One row per model: the LR the model read (nearest), bicubic, the mean estimate and samples
(fast sampler, app defaults, fixed seeds). The face is the clip's largest detected face in
``--frame``, aligned as the app aligns it. The clip is rendered from scikit-image's
public-domain astronaut (scripts/make_resources.py), so the figure can ship.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from sdesr_gui.core import faces  # noqa: E402
from sdesr_gui.core.enhance import Enhancer, SamplerSettings  # noqa: E402
from sdesr_gui.core.selection import at_scale, from_detection  # noqa: E402
from sdesr_gui.core.video import open_source  # noqa: E402

CELL, PAD, HEAD, LEFT = 128, 6, 18, 150


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=ROOT / "resources" / "sample_clip.mp4")
    ap.add_argument("--frame", type=int, default=30)
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=FILE")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    src = open_source(a.clip)
    frame = src.frame(a.frame)
    found = faces.detect_faces_in_frame(frame)
    if not found:
        print(f"no face found in frame {a.frame} of {a.clip.name}", file=sys.stderr)
        return 2
    sel = from_detection(frame, found[0], a.frame)
    rows = []
    for spec in a.model:
        label, _, path = spec.partition("=")
        start = None
        if "@" in path:
            path, _, level = path.rpartition("@")
            start = float(level)
        enh = Enhancer.from_files(path)
        s = at_scale(sel, enh.scale_factor)
        st = SamplerSettings(samples=a.samples, seed=a.seed, start_sigma=start)
        res = enh.run(faces.to_tensor(s.lr), st)
        n = s.lr.shape[0]
        tiles = [(f"LR {n}x{n}", faces.to_uint8(faces.to_tensor(s.lr))[0].repeat(CELL // n, 0).repeat(CELL // n, 1)),
                 ("bicubic", faces.to_uint8(res.bicubic)[0]), ("mean estimate", faces.to_uint8(res.mean)[0])]
        tiles += [(f"sample {i + 1}", im) for i, im in enumerate(faces.to_uint8(res.samples))]
        rows.append((label, tiles))
        print(f"{label}: {Path(path).name}, {enh.scale_factor}x"
              + (f", start from the mean estimate at sigma {start:g}" if start is not None else ""), flush=True)

    cols = max(len(t) for _, t in rows)
    w = LEFT + cols * (CELL + PAD)
    h = len(rows) * (CELL + HEAD + PAD) + 24
    canvas = Image.new("RGB", (w, h), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), f"{a.clip.name}, frame {a.frame}: face {found[0].width:.0f} px wide, sensor noise + "
              f"video compression. Generated faces are leads, not identifications.", fill=(0, 0, 0))
    y = 24
    for label, tiles in rows:
        draw.text((6, y + HEAD + CELL // 2 - 6), label, fill=(0, 0, 0))
        for j, (name, im) in enumerate(tiles):
            x = LEFT + j * (CELL + PAD)
            draw.text((x, y + 2), name, fill=(60, 60, 60))
            canvas.paste(Image.fromarray(np.ascontiguousarray(im)), (x, y + HEAD))
        y += CELL + HEAD + PAD
    a.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
