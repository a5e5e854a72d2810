"""``sdesr enhance``: super-resolve face images into an output folder, with a run record per input."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .common import UsageError, add_model_args, add_sampler_args, check_out_dir, load_enhancer, load_footage_enhancer, \
    settings_from_args, unique_stems, warn


def cmd_enhance(args) -> int:
    from tqdm import tqdm

    from ..core import faces, metrics
    from ..core.enhance import prepare_face, scale_for_input
    from ..core.provenance import atomic_save_png, make_run_record, sha256_file, write_json_atomic
    from ..core.errors import InputError
    from ..core.video import is_video_file, iter_image_files, load_still

    for raw in args.inputs:  # a clip named here would fail as "not an image": say what to do
        clip = Path(raw).expanduser()
        if is_video_file(clip) and clip.is_file():
            raise InputError(f"{clip.name} is a video: `sdesr detect {clip.name} --out DIR` crops its "
                             "faces for `sdesr enhance`, or open it in sdesr-gui.", clip)
    settings = settings_from_args(args)
    out = Path(args.out).expanduser()
    files = iter_image_files(args.inputs)
    input_dirs = sorted({p.resolve().parent for p in files} |
                        {Path(i).resolve() for i in args.inputs if Path(i).is_dir()})
    check_out_dir(out, input_dirs)
    stems = unique_stems(files)
    k = settings.samples
    # K >= 2 samples can disagree: their std map (<stem>_std.npy) and its picture (_uncertainty.png)
    planned = {stem: [out / f"{stem}_sample{i + 1}.png" for i in range(k)]
               + [out / f"{stem}_mean.png", out / f"{stem}_bicubic.png", out / f"{stem}.json"]
               + ([out / f"{stem}_std.npy", out / f"{stem}_uncertainty.png"] if k >= 2 else [])
               for stem in stems}
    if not args.overwrite:
        for paths in planned.values():
            for p in paths:
                if p.exists():
                    raise UsageError(f"{p} already exists; choose another output folder or pass --overwrite")

    # read and check every input before anything is written
    t0 = time.perf_counter()
    notes: list[list[str]] = [[] for _ in files]  # per input: conversions the user should know of
    images = [load_still(p, notes=n) for p, n in zip(files, notes)]
    active = any(v is not None for v in settings.attributes.values())
    # the magnification of each input: --scale, the --weights file's own, or by the input's size
    enhancers: dict = {}
    if args.weights:
        enh = load_enhancer(args, need_classifier=active, scale=args.scale)
        enhancers[enh.scale_factor] = enh
        scales = [(enh.scale_factor, f"the {enh.scale_factor}x model given by --weights")] * len(images)
    elif args.scale:
        scales = [(args.scale, f"--scale {args.scale}")] * len(images)
    else:
        scales = [scale_for_input(img.shape) for img in images]
    for sc in sorted({sc for sc, _ in scales} - set(enhancers)):
        enhancers[sc] = load_enhancer(args, need_classifier=active, scale=sc)
    # at 8x, the footage model (blur, noise, compression) for an LR it judges degraded
    footage = None
    if not args.weights and any(sc == 8 for sc, _ in scales):
        footage = load_footage_enhancer(args.footage, enhancers[8])
    prepared = [prepare_face(img, lr_size=enhancers[sc].lr_size) for img, (sc, _) in zip(images, scales)]
    input_hashes = [sha256_file(p) for p in files]
    for p, prep, note, (sc, why) in zip(files, prepared, notes, scales):
        for n in note:  # e.g. transparency filled with mid-grey
            warn(n)
        if prep.warning:
            warn(f"{p.name}: {prep.warning}")
        if sc != 8 and not args.scale and not args.weights:
            warn(f"{p.name}: using the {sc}x model: {why}")
    t_load = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)

    for path, stem, img, prep, sha, note, (scale, why) in zip(files, stems, images, prepared, input_hashes, notes,
                                                               scales):
        enh = enhancers[scale]
        verdict: dict = {}
        if scale == 8 and footage is not None:
            verdict = footage.footage_verdict(prep.lr) if args.footage == "auto" else \
                {"degraded": True, "text": "--footage on: the footage model"}
            if verdict["degraded"]:
                enh = footage
            if not args.quiet:
                print(f"{path.name}: {verdict['text']}", file=sys.stderr)
        written: list[Path] = []
        mismatches: list[str] = []  # samples that do not reproduce the LR: said once the outputs are written
        previous = _previous_outputs(out, stem) if args.overwrite else []
        try:
            total = settings.n_steps()
            with tqdm(total=total, desc=stem, unit="step", file=sys.stderr, leave=True,
                      disable=args.quiet) as bar:
                def cb(info, bar=bar):
                    bar.update(info.step - bar.n)

                res = enh.run(prep.lr, settings, callback=cb)
            rec = make_run_record("enhance", device=str(enh.device), seed=settings.seed,
                                  model=enh.model_info, sampler=res.settings,
                                  attributes=res.settings["attributes"])
            rec.add_input(path, sha256=sha, mode=prep.mode, warning=prep.warning,
                          size=[int(img.shape[1]), int(img.shape[0])], **({"notes": note} if note else {}))
            if enh.classifier_info:
                rec.extra["classifier"] = enh.classifier_info
            samples_u8 = faces.to_uint8(res.samples)
            per_sample = metrics.image_metrics(res.samples, res.lr, prep.hr)
            mean_metrics = metrics.image_metrics(res.mean, res.lr, prep.hr)[0] if res.mean is not None else {}
            for i, (img, seed) in enumerate(zip(samples_u8, res.seeds)):
                p = out / f"{stem}_sample{i + 1}.png"
                digest = atomic_save_png(p, img, generated=True)  # labelled in the file itself
                written.append(p)
                # a sample that does not reproduce the LR (a diverged sampler) is said so, here and in the record
                bad = metrics.lr_mismatch(per_sample[i], mean_metrics)
                if bad:
                    mismatches.append(f"{path.name}: sample {i + 1} (seed {seed}) {bad['text']}.")
                rec.add_output(p, digest, kind="sample", index=i + 1, seed=seed, generated=True,
                               **per_sample[i], **({"lr_mismatch": bad} if bad else {}))
            if res.mean is not None:
                # the posterior-mean estimate: generated by the model, but an estimate, not a sample
                p = out / f"{stem}_mean.png"
                digest = atomic_save_png(p, faces.to_uint8(res.mean)[0], generated=True)
                written.append(p)
                rec.add_output(p, digest, kind="mean", generated=True,
                               note=res.settings["mean_estimate"]["what"], **mean_metrics)
            p = out / f"{stem}_bicubic.png"
            # the bicubic baseline interpolates the input: labelled not generated, as in the GUI export
            digest = atomic_save_png(p, faces.to_uint8(res.bicubic)[0], generated=False)
            written.append(p)
            rec.add_output(p, digest, kind="bicubic", **metrics.image_metrics(res.bicubic, res.lr, prep.hr)[0])
            rec.timings = {"load_seconds": round(t_load, 4), "sampling_seconds": round(res.seconds, 4),
                           "seconds_per_sample": round(res.seconds / k, 4), "nfe": res.nfe}
            block = _write_uncertainty(out, stem, res, prep, rec, written,  # adds its outputs to rec
                                       model_info=enh.model_info)
            record = rec.to_dict()
            record["uncertainty"] = block
            record["scale"] = {"factor": scale, "lr_size": enh.lr_size, "why": why}  # which model, and why
            if verdict:
                record["model_choice"] = verdict  # clean-trained or footage model, and why
            # what each number above means: unit, which way is better, one line (core.metrics.METRICS)
            record["metric_legend"] = metrics.metric_legend(metrics.metric_keys_in(record["outputs"], block))
            write_json_atomic(out / f"{stem}.json", record)
            written.append(out / f"{stem}.json")
            # --overwrite with fewer samples: the earlier run's extra samples and map would sit
            # beside this record as if they were its own; remove what that record listed and
            # this run did not write again
            keep = {q.resolve() for q in written}
            for q in previous:
                if q.resolve() not in keep:
                    q.unlink(missing_ok=True)
            if not args.quiet:
                print(f"{path} -> {out / stem}_sample*.png ({k} sample{'s' if k > 1 else ''}, "
                      f"{res.nfe} evaluations, {res.seconds:.1f} s)"
                      + (f"; uncertainty map {out / stem}_uncertainty.png" if k >= 2 else ""))
            for line in mismatches:  # a warning, not a summary: printed with --quiet too
                print(f"warning: {line}", file=sys.stderr)
        except BaseException:
            for p in written:  # nothing half-written: a stem's outputs appear together or not at all
                p.unlink(missing_ok=True)
            raise
    return 0


def _previous_outputs(out: Path, stem: str) -> list[Path]:
    """The files an earlier run's record ``<stem>.json`` in ``out`` lists as its outputs (only
    those inside ``out``: a record never makes us touch anything else)."""
    import json

    try:
        rec = json.loads((out / f"{stem}.json").read_text())
        paths = [Path(o["path"]) for o in rec.get("outputs", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    base = out.resolve()
    return [p for p in paths if p.resolve().parent == base and p.name.startswith(stem)]


def _write_uncertainty(out: Path, stem: str, res, prep, rec, written: list, model_info=None) -> dict:
    """With K >= 2 samples write <stem>_std.npy and <stem>_uncertainty.png and return the
    record's ``uncertainty`` block (plus the mean estimate's actual error when the input was an
    HR frame); with K = 1 write nothing and say that no map is claimed.  The std is scaled by the
    model's calibration factor (``model_info``'s ``uncertainty_scale``; 1 when it has none)."""
    from ..core import uncertainty
    from ..core.provenance import atomic_save_png

    k = int(res.samples.shape[0])
    if k < 2:
        return uncertainty.no_map_record(k)
    umap = uncertainty.uncertainty_map(res.samples, scale=uncertainty.run_scale(model_info, res.settings))
    block = umap.to_dict()
    if uncertainty.started_near_mean(res.settings):
        block["note"] = uncertainty.NEAR_MEAN_NOTE
    p = out / f"{stem}_std.npy"
    digest = uncertainty.save_std_npy(p, umap.std)
    written.append(p)
    rec.add_output(p, digest, kind="std_map", generated=True, samples=k, dtype="float32",
                   shape=list(umap.std.shape), note=uncertainty.WHAT)
    p = out / f"{stem}_uncertainty.png"
    digest = atomic_save_png(p, uncertainty.render_std_map(umap.std, samples=k), generated=True)
    written.append(p)
    rec.add_output(p, digest, kind="uncertainty_map", generated=True, samples=k,
                   scale_max=uncertainty.DEFAULT_VMAX, note=uncertainty.CAPTION)
    block["files"] = {"std": f"{stem}_std.npy", "map": f"{stem}_uncertainty.png"}
    block["scale_max"] = uncertainty.DEFAULT_VMAX
    if prep.hr is not None and res.mean is not None:
        block["against_hr"] = {"estimate": "the mean estimate (<stem>_mean.png)",
                               **uncertainty.compare_with_reference(res.mean, prep.hr, umap)}
    return block


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    e = sub.add_parser("enhance", help="super-resolve face images",
                       description="Super-resolve faces. A 128x128 input is the HR face frame (degraded to the "
                       "model's LR first: 16x16 for 8x, 8x8 for 16x); a 16x16 or 8x8 input is the LR itself (8x8 "
                       "picks the 16x model); other sizes are resized with a warning.")
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder (never an input folder)")
    add_sampler_args(e)
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    e.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_args(e)
    from ..core.enhance import SCALES

    e.add_argument("--scale", type=int, choices=list(SCALES),
                   help="magnification: 8 (16x16 -> 128x128) or 16 (8x8 -> 128x128, for faces under ~12 px); "
                   "default: 16 for an 8x8 input, else 8")
    e.add_argument("--footage", choices=["auto", "on", "off"], default="auto",
                   help="8x: the footage model (trained on blurred, noisy, compressed LR) for inputs it judges "
                   "degraded (auto, the default, when it is installed), for every input (on), or never (off)")
    e.set_defaults(func=cmd_enhance)
