"""``sdesr evaluate``: PSNR/SSIM/consistency of a model against bicubic on aligned HR faces."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import UsageError, add_sampling_job_args, load_enhancer, load_footage_enhancer, settings_from_args


def _hr_faces_from(paths: list[str], split: str | None) -> list[Path]:
    """Image files from folders/files, or the ``split`` rows of a prepared dataset's manifest."""
    import csv

    from ..core.video import iter_image_files

    out: list[Path] = []
    for p in map(Path, paths):
        manifest = p / "manifest.csv"
        if p.is_dir() and manifest.is_file():
            with open(manifest, newline="") as fh:
                for row in csv.DictReader(fh):
                    if split is None or row.get("split") == split:
                        f = p / row["file"]  # manifest paths are relative to the dataset folder
                        out.append(f if f.exists() else p / "images" / row["file"])
        else:
            out += iter_image_files([p])
    if not out:
        raise UsageError("no faces to evaluate were found")
    return out


def cmd_evaluate(args) -> int:
    import torch
    from tqdm import tqdm

    from ..core.degradations import STRENGTHS
    from ..core.evaluation import evaluate, format_differences, format_table
    from ..core.metrics import LR_MISMATCH_FACTOR, LR_MISMATCH_MARGIN, metric_keys_in, metric_legend
    from ..core.provenance import to_json, versions, device_info, atomic_write_text
    from ..core.video import load_still

    settings = settings_from_args(args)
    if args.no_samples and args.no_mean:
        raise UsageError("--no-samples with --no-mean leaves nothing to evaluate but bicubic; drop one of them")
    files = _hr_faces_from(args.inputs, args.split)[: args.limit]
    imgs = []
    for p in files:
        im = load_still(p)
        if im.shape[:2] != (128, 128):
            raise UsageError(f"{p.name} is {im.shape[1]}x{im.shape[0]}; evaluation needs aligned 128x128 faces")
        imgs.append(im)
    if args.threads:
        torch.set_num_threads(args.threads)
    enh = load_enhancer(args, need_classifier=any(v is not None for v in settings.attributes.values()))
    footage = None
    if args.footage != "off":  # what the app delivers: each face to the model it would pick
        if enh.scale_factor != 8:
            raise UsageError(f"--footage {args.footage} is for the 8x model; {enh.model_info.get('name', 'this')} "
                             f"is {enh.scale_factor}x")
        footage = load_footage_enhancer(args.footage, enh)
        if footage is None:
            raise UsageError("--footage auto needs the footage model, which is not installed")
    embed_fn = None
    if args.cs:  # identity kept: cosine of dlib embeddings of output and HR (the app's default embedder)
        from ..core.gallery import get_embedder

        embed_fn = get_embedder("dlib").embed_fn()
    with tqdm(total=len(imgs), desc="evaluate", unit="face", file=sys.stderr, disable=args.quiet) as bar:
        res = evaluate(enh, imgs, {} if args.no_samples else {args.name or settings.sampler: settings},
                       batch=args.batch,
                       progress=lambda d, n: bar.update(d - bar.n), embed_fn=embed_fn,
                       mean_estimate=not args.no_mean, mean_mirror=settings.mean_mirror,
                       degradation=args.degrade, footage=footage, footage_mode=args.footage)
    summary = res.summary()
    diffs = res.differences("bicubic")
    if args.degrade != "clean" or enh.scale_factor != 8:
        print(f"{enh.scale_factor}x ({enh.lr_size}x{enh.lr_size} -> 128x128), LR degradation: {args.degrade} "
              f"({STRENGTHS[args.degrade].describe()})")
    print(format_table(summary))
    if not args.no_mean:
        how = ("averaged with its mirror image's, two evaluations" if settings.mean_mirror else "one evaluation")
        print(f"(mean estimate: the model's posterior-mean estimate, {how} per face; an estimate, not a sample)")
    print()
    print(format_differences(diffs))
    choice = None
    if footage is not None:
        n_foot = sum(c["model"] == "footage" for c in res.choices)
        choice = {"mode": args.footage, "clean_model": enh.model_info.get("path"),
                  "footage_model": footage.model_info.get("path"), "threshold": footage.footage_threshold,
                  "faces_to_footage_model": n_foot, "per_face": res.choices}
        print(f"model choice ({args.footage}): the footage model took {n_foot} of {len(res.choices)} faces, "
              f"the clean-trained model {len(res.choices) - n_foot}"
              + (f" (LR degradation estimate above {footage.footage_threshold:g})" if args.footage == "auto" else ""))
    mismatched = res.mismatches()
    for name, idx in mismatched.items():  # samples that do not reproduce their LR (a diverged sampler)
        print(f"{name}: {len(idx)} of {len(imgs)} samples do not match their input"
              + (f" (faces {', '.join(str(i) for i in idx)}, counted from 0)" if idx else "")
              + f": LR residual above {LR_MISMATCH_FACTOR:g}x the mean estimate's + {LR_MISMATCH_MARGIN:g} grey levels")
    if args.json:
        report = {"faces": len(imgs), "settings": None if args.no_samples else settings.to_dict(),
                  "mean_mirror": None if args.no_mean else settings.mean_mirror, "model": enh.model_info,
                  "degradation": {"strength": args.degrade, **STRENGTHS[args.degrade].to_dict(),
                                  "seed": "per face: its index in the list (0, 1, ...)"},
                  "summary": summary, "vs_bicubic": diffs, "model_choice": choice,
                  "metric_legend": metric_legend(metric_keys_in(summary)),
                  "seconds": res.seconds, "per_face": res.per_face, "lr_mismatch_faces": mismatched,
                  "files": [str(p) for p in files], "versions": versions(), "device": device_info(str(enh.device))}
        atomic_write_text(args.json, to_json(report))
    return 0


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    v = sub.add_parser("evaluate", help="PSNR/SSIM/consistency of a model vs bicubic on aligned HR faces")
    v.add_argument("inputs", nargs="+", metavar="INPUT", help="folders/files of 128x128 faces, or a prepared dataset")
    v.add_argument("--split", default="val", help="dataset split to use when INPUT is a prepared dataset (val)")
    v.add_argument("--limit", type=int, default=200, help="at most this many faces (200)")
    v.add_argument("--no-mean", action="store_true",
                   help="leave out the mean-estimate row (the model's posterior-mean estimate; see --mean-mirror)")
    v.add_argument("--no-samples", action="store_true",
                   help="bicubic and the mean estimate only (no sampler run: one or two network "
                   "evaluations per face)")
    v.add_argument("--name", help="label of this setting in the table")
    v.add_argument("--degrade", default="clean", choices=["clean", "mild", "moderate", "strong"],
                   help="how the LR is made from each HR face: clean bicubic (default) or a fixed footage-grade "
                   "strength (blur, noise, JPEG / H.264-like compression; core.degradations.STRENGTHS)")
    v.add_argument("--cs", action="store_true",
                   help="also CS: cosine of dlib face embeddings of output and HR (identity kept; slower)")
    v.add_argument("--footage", default="off", choices=["off", "auto", "on"],
                   help="8x: off (default): every face to the one model; auto: each face to the model the app "
                   "picks for its LR (the footage model when it judges the LR degraded, as `sdesr enhance "
                   "--footage auto`), so the table measures what the app delivers; on: the footage model")
    add_sampling_job_args(v, "write the full report (per-face values) here")
    v.set_defaults(func=cmd_evaluate)
