#!/usr/bin/env python
"""Measure the shipped models for weights/README.md (the model card).

Runs on the validation identities of a prepared dataset (``sdesr prepare``), 16x16 -> 128x128:

1. ``main``: PSNR / SSIM / consistency / CS for bicubic, the mean estimate and the fast sampler
   on ``--faces`` validation faces (spread evenly over the split), and the paper's PC sampler
   (N=1000, M=2, r=0.16) on the first ``--pc-faces`` of them (PC costs 3,000 network calls per
   face); ``mean``: bicubic and the mean estimate alone on the same faces (one call per face);
2. ``r_sweep``: CS (and PSNR) as a function of the corrector SNR r (the paper's Fig. 4) with PC
   at ``--sweep-steps`` steps, M=2, on ``--sweep-faces`` faces;
3. ``classifier``: accuracy and balanced accuracy of each attribute at sigma 0.01 / 0.1 / 1 /
   10 on all labelled validation faces (all labels, and the official CelebA labels alone);
4. ``guidance``: for each attribute, faces with and without it are sampled with guidance towards
   present / absent at several h; agreement of the samples with the requested value (judged by
   the same classifier at sigma 0.01 -- not an independent judge) and their consistency.

Writes one JSON report (``--out``) and prints markdown tables. Everything is seeded.

    python scripts/model_card_eval.py --dataset /work/data/celeba128 --out /work/sdesr_runs/card.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdesr_gui.core import faces, metrics  # noqa: E402
from sdesr_gui.core.datasets import ATTRIBUTES, read_manifest  # noqa: E402
from sdesr_gui.core.enhance import (CLASSIFIER_WEIGHTS_NAME, SCORE_WEIGHTS_NAME, Enhancer,  # noqa: E402
                                    SamplerSettings, weights_dir)
from sdesr_gui.core.evaluation import MEAN_ROW, evaluate, format_table, summarize  # noqa: E402
from sdesr_gui.core.provenance import device_info, to_json, versions, write_json_atomic  # noqa: E402
from sdesr_gui.core.video import load_still  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def split_rows(dataset: Path, split: str = "val") -> list[dict]:
    """The rows of one split of a prepared dataset, sorted by file (deterministic)."""
    rows = [r for r in read_manifest(dataset) if r["split"] == split]
    return sorted(rows, key=lambda r: r["file"])


def val_rows(dataset: Path) -> list[dict]:
    return split_rows(dataset, "val")


def spread(rows: list, n: int) -> list:
    """``n`` rows spread evenly over ``rows`` (deterministic)."""
    if n >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in idx]


def load(dataset: Path, rows: list) -> list[np.ndarray]:
    return [load_still(dataset / r["file"]) for r in rows]


def make_embed_fn(name: str):
    from sdesr_gui.core.gallery import get_embedder

    emb = get_embedder(name)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(emb.embed_aligned(faces.to_uint8(x)), dtype=np.float32))

    return embed, emb.name


def run_main(enh, imgs, embed_fn, args, report):
    fast = SamplerSettings(sampler="fast", seed=0, mirror=args.mirror, mean_mirror=args.mean_mirror,
                           start_sigma=args.start_sigma)
    log(f"main: bicubic + fast ({fast.n_steps()} steps{', mirror-averaged' if args.mirror else ''}"
        f"{f', from the mean estimate at sigma {args.start_sigma:g}' if args.start_sigma else ''}) on {len(imgs)} faces")
    res = evaluate(enh, imgs, {"fast": fast}, embed_fn=embed_fn, batch=args.batch, mean_estimate=True,
                   mean_mirror=args.mean_mirror,
                   progress=lambda d, n: log(f"  fast {d}/{n}") if d % 40 == 0 else None)
    out = {"faces": len(imgs), "summary": res.summary(), "seconds": res.seconds,
           "settings": {"fast": fast.to_dict()}, "per_face": res.per_face}
    if args.pc_faces > 0:
        pc = SamplerSettings(sampler="pc", steps=args.pc_steps, corrector_steps=2, snr=0.16, seed=0)
        sub = imgs[: args.pc_faces]
        log(f"main: PC N={pc.n_steps()} M=2 r=0.16 on {len(sub)} faces")
        t0 = time.perf_counter()
        r2 = evaluate(enh, sub, {"pc": pc}, embed_fn=embed_fn, batch=len(sub))
        out["pc"] = {"faces": len(sub), "summary": r2.summary(), "seconds": time.perf_counter() - t0,
                     "settings": pc.to_dict(), "per_face": r2.per_face}
    report["main"] = out
    print("\n## Main table (fast)\n" + format_table(out["summary"]))
    if "pc" in out:
        print("\n## PC subset\n" + format_table(out["pc"]["summary"]))


def run_mean(enh, imgs, embed_fn, args, report):
    """bicubic and the mean estimate only (one or two evaluations per face): the ``main`` faces."""
    log(f"mean: bicubic + mean estimate on {len(imgs)} faces")
    res = evaluate(enh, imgs, {}, embed_fn=embed_fn, batch=args.batch, mean_estimate=True,
                   mean_mirror=args.mean_mirror)
    report["mean"] = {"faces": len(imgs), "summary": res.summary(), "seconds": res.seconds,
                      "mean_mirror": args.mean_mirror, "per_face": res.per_face}
    print("\n## Mean estimate\n" + format_table(report["mean"]["summary"]))


def run_sweep(enh, imgs, embed_fn, args, report):
    sub = imgs[: args.sweep_faces]
    rows = []
    for r in args.r_values:
        st = SamplerSettings(sampler="pc", steps=args.sweep_steps, corrector_steps=2, snr=r, seed=0)
        t0 = time.perf_counter()
        res = evaluate(enh, sub, {"pc": st}, embed_fn=embed_fn, batch=len(sub))
        s = res.summary()["pc"]
        rows.append({"r": r, **{k: v for k, v in s.items()}, "seconds": time.perf_counter() - t0})
        log(f"sweep r={r}: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in s.items()))
    report["r_sweep"] = {"faces": len(sub), "steps": args.sweep_steps, "corrector_steps": 2, "rows": rows}


@torch.no_grad()
def classify(clf, x: torch.Tensor, sigma: float, gen: torch.Generator, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        noisy = xb + sigma * torch.randn(xb.shape, generator=gen)
        out.append(torch.sigmoid(clf(noisy, torch.full((len(xb),), sigma))))
    return torch.cat(out)


def _acc(p: np.ndarray, y: np.ndarray) -> dict:
    if len(y) == 0:
        return {"n": 0}
    pos, neg = y == 1, y == 0
    d = {"n": int(len(y)), "pos": int(pos.sum()), "acc": float((p == y).mean())}
    if pos.any() and neg.any():
        d["bacc"] = float(0.5 * ((p[pos] == 1).mean() + (p[neg] == 0).mean()))
    return d


def run_classifier(enh, dataset, rows, args, report):
    clf = enh.classifier
    names = list(clf.attributes)
    x = torch.cat([faces.to_tensor(im) for im in load(dataset, rows)])
    labels = {a: np.array([int(r[a]) if r.get(a, "") in ("0", "1") else -1 for r in rows]) for a in names}
    official = np.array(["official" in r.get("attr_source", "") for r in rows])
    out = {}
    for sigma in (0.01, 0.1, 1.0, 10.0):
        gen = torch.Generator().manual_seed(1234)
        p = (classify(clf, x, sigma, gen) >= 0.5).int().numpy()
        per = {}
        for j, a in enumerate(names):
            y = labels[a]
            known = y >= 0
            per[a] = {"all": _acc(p[known, j], y[known]),
                      "official": _acc(p[known & official, j], y[known & official])}
        out[f"{sigma:g}"] = per
        log(f"classifier sigma={sigma:g}: " + ", ".join(
            f"{a} {per[a]['all']['acc']:.3f}/{per[a]['all'].get('bacc', float('nan')):.3f}" for a in names))
    report["classifier_accuracy"] = {"faces": len(rows), "per_sigma": out}


def run_guidance(enh, dataset, rows, args, report):
    clf = enh.classifier
    names = list(clf.attributes)
    out = {}
    for a in names:
        pos = [r for r in rows if r.get(a) == "1"]
        neg = [r for r in rows if r.get(a) == "0"]
        k = args.guide_faces // 2
        chosen = spread(pos, k) + spread(neg, k)
        truth = np.array([1] * len(spread(pos, k)) + [0] * len(spread(neg, k)))
        imgs = load(dataset, chosen)
        hr = torch.cat([faces.to_tensor(im) for im in imgs])
        lr = enh.degrade(hr)
        rows_a = []
        unguided = None
        for target in (1, 0):
            for h in args.h_values:
                st = SamplerSettings(sampler="fast", seed=0, h=float(h),
                                     attributes={a: (target if h > 0 else None)})
                t0 = time.perf_counter()
                if h > 0 or unguided is None:
                    sr = enh.run_many(lr, st)
                else:  # h = 0 does not depend on the target: sample once
                    sr = unguided
                if h == 0:
                    unguided = sr
                gen = torch.Generator().manual_seed(99)
                pred = (classify(clf, sr, 0.01, gen)[:, names.index(a)] >= 0.5).int().numpy()
                agree = pred == target
                same = truth == target
                cons = metrics.consistency(sr, lr).numpy()
                rows_a.append({
                    "target": target, "h": h,
                    "agree_truth_matches_target": float(agree[same].mean()) if same.any() else None,
                    "agree_truth_opposite": float(agree[~same].mean()) if (~same).any() else None,
                    "consistency": summarize(cons.tolist()),
                    "psnr": summarize(metrics.psnr(sr, hr).tolist()),
                    "seconds": time.perf_counter() - t0})
                log(f"guidance {a}={target} h={h}: agree(same) {rows_a[-1]['agree_truth_matches_target']}, "
                    f"agree(opposite) {rows_a[-1]['agree_truth_opposite']}, consistency {cons.mean():.2f}")
        out[a] = {"faces": len(chosen), "with": int(truth.sum()), "rows": rows_a}
    report["guidance"] = out


def _ms(d: dict, k: str, fmt: str = "{:.2f}") -> str:
    v = d.get(k)
    if not v or not v.get("n"):
        return "-"
    return (fmt + " ± " + fmt).format(v["mean"], v["std"])


def render_markdown(report: dict) -> str:
    """The model card's result tables from a report (or several merged)."""
    out = []
    m = report.get("main")
    if m:
        out.append(f"| method | faces | PSNR (dB) | SSIM | consistency | CS |\n|---|---:|---:|---:|---:|---:|")
        rows = dict(m["summary"])
        extra = report.get("mean")  # a separate ``mean`` part on the same faces
        if extra and MEAN_ROW in extra["summary"] and MEAN_ROW not in rows:
            rows[MEAN_ROW] = extra["summary"][MEAN_ROW]
        for name, s in rows.items():
            out.append(f"| {name} | {m['faces']} | {_ms(s, 'psnr')} | {_ms(s, 'ssim', '{:.3f}')} | "
                       f"{_ms(s, 'consistency')} | {_ms(s, 'cs', '{:.3f}')} |")
        if "pc" in m:
            p = m["pc"]
            for name, s in p["summary"].items():
                label = "PC N=1000 M=2 r=0.16" if name == "pc" else f"{name} (same {p['faces']} faces)"
                out.append(f"| {label} | {p['faces']} | {_ms(s, 'psnr')} | {_ms(s, 'ssim', '{:.3f}')} | "
                           f"{_ms(s, 'consistency')} | {_ms(s, 'cs', '{:.3f}')} |")
        out.append("")
    sw = report.get("r_sweep")
    if sw:
        out.append(f"| r | CS | PSNR (dB) | SSIM | consistency |\n|---:|---:|---:|---:|---:|")
        for r in sw["rows"]:
            out.append(f"| {r['r']:g} | {_ms(r, 'cs', '{:.3f}')} | {_ms(r, 'psnr')} | {_ms(r, 'ssim', '{:.3f}')} | "
                       f"{_ms(r, 'consistency')} |")
        out.append("")
    c = report.get("classifier_accuracy")
    if c:
        sig = list(c["per_sigma"])
        attrs = list(c["per_sigma"][sig[0]])
        out.append("| attribute | labels | " + " | ".join(f"sigma {x}" for x in sig) + " |")
        out.append("|---|---|" + "---:|" * len(sig))
        for a in attrs:
            for which in ("all", "official"):
                cells = []
                for x in sig:
                    d = c["per_sigma"][x][a][which]
                    if not d.get("n"):
                        cells.append("-")
                        continue
                    b = f" / {100 * d['bacc']:.1f}" if "bacc" in d else ""
                    cells.append(f"{100 * d['acc']:.1f}{b}")
                n = c["per_sigma"][sig[0]][a][which]
                out.append(f"| {a} | {which} (n={n.get('n', 0)}, {n.get('pos', 0)} present) | " + " | ".join(cells) + " |")
        out.append("")
    g = report.get("guidance")
    if g:
        out.append("| attribute | requested | h | agreement, faces that have it as requested | "
                   "agreement, faces that do not | consistency |\n|---|---|---:|---:|---:|---:|")
        for a, d in g.items():
            for r in d["rows"]:
                f = lambda v: "-" if v is None else f"{100 * v:.0f} %"
                out.append(f"| {a} | {'present' if r['target'] else 'absent'} | {r['h']:g} | "
                           f"{f(r['agree_truth_matches_target'])} | {f(r['agree_truth_opposite'])} | "
                           f"{_ms(r, 'consistency')} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--classifier", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--parts", default="main,classifier,guidance,sweep")
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--split", choices=["val", "train"], default="val",
                    help="faces of the main/mean/sweep parts from this split (train: how much the model "
                         "memorises, against the same measure on val)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pc-faces", type=int, default=4)
    ap.add_argument("--pc-steps", type=int, default=1000)
    ap.add_argument("--sweep-faces", type=int, default=8)
    ap.add_argument("--sweep-steps", type=int, default=100)
    ap.add_argument("--r-values", type=float, nargs="+", default=[0.05, 0.1, 0.16, 0.25, 0.35, 0.5])
    ap.add_argument("--guide-faces", type=int, default=8)
    ap.add_argument("--h-values", type=float, nargs="+", default=[0, 250, 500, 1000])
    ap.add_argument("--embedder", default="dlib")
    ap.add_argument("--mirror", action="store_true",
                    help="main: the fast sampler with the mirror-averaged denoiser (twice the work)")
    ap.add_argument("--start-sigma", type=float, default=None, metavar="SIGMA",
                    help="main: the fast sampler starts from the mean estimate diffused to SIGMA "
                         "(default: pure noise, posterior samples)")
    ap.add_argument("--mean-mirror", action=argparse.BooleanOptionalAction, default=True,
                    help="the mean estimate averaged with its mirror image's (the app's default; "
                         "--no-mean-mirror: one evaluation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                    help="only print the markdown tables of these reports (merged)")
    args = ap.parse_args(argv)
    if args.render:
        merged: dict = {}
        for p in args.render:
            merged.update({k: v for k, v in json.loads(p.read_text()).items() if v is not None})
        print(render_markdown(merged))
        return 0

    torch.set_num_threads(args.threads)
    wd = weights_dir()
    enh = Enhancer.from_files(args.weights or wd / SCORE_WEIGHTS_NAME,
                              args.classifier or wd / CLASSIFIER_WEIGHTS_NAME)
    rows = val_rows(args.dataset)
    parts = set(args.parts.split(","))
    if args.split != "val" and parts - {"main", "mean", "sweep"}:
        ap.error("--split train is for the main, mean and sweep parts only")
    chosen = spread(split_rows(args.dataset, args.split), args.faces)
    report = {"dataset": str(args.dataset.name), "split": args.split, "val_faces_total": len(rows),
              "val_identities": len({r["identity"] for r in rows}),
              "eval_identities": len({r["identity"] for r in chosen}),
              "model": enh.model_info, "classifier": enh.classifier_info,
              "versions": versions(), "device": device_info("cpu"), "threads": args.threads}
    embed_fn = None
    if parts & {"main", "mean", "sweep"}:
        try:
            embed_fn, report["embedder"] = make_embed_fn(args.embedder)
        except Exception as exc:  # CS is left out, said so in the report
            log(f"no embedder ({exc}); CS is left out")
            report["embedder"] = None
    imgs = load(args.dataset, chosen) if parts & {"main", "mean", "sweep"} else []
    t0 = time.perf_counter()
    if "classifier" in parts:
        run_classifier(enh, args.dataset, rows, args, report)
        write_json_atomic(args.out, report)
    if "main" in parts:
        run_main(enh, imgs, embed_fn, args, report)
        write_json_atomic(args.out, report)
    if "mean" in parts:
        run_mean(enh, imgs, embed_fn, args, report)
        write_json_atomic(args.out, report)
    if "guidance" in parts:
        run_guidance(enh, args.dataset, rows, args, report)
        write_json_atomic(args.out, report)
    if "sweep" in parts:
        run_sweep(enh, imgs, embed_fn, args, report)
    report["seconds"] = time.perf_counter() - t0
    write_json_atomic(args.out, report)
    log(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
