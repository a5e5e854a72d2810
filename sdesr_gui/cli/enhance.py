"""``sdesr enhance``: super-resolve face images into an output folder, with a run record per input."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .common import UsageError, add_model_args, add_sampler_args, check_out_dir, load_enhancer, settings_from_args, \
    unique_stems, warn


def cmd_enhance(args) -> int:
    from tqdm import tqdm

    from ..core import faces, metrics
    from ..core.enhance import prepare_face
    from ..core.provenance import atomic_save_png, make_run_record, sha256_file
    from ..core.video import iter_image_files, load_still

    settings = settings_from_args(args)
    out = Path(args.out).expanduser()
    files = iter_image_files(args.inputs)
    input_dirs = sorted({p.resolve().parent for p in files} |
                        {Path(i).resolve() for i in args.inputs if Path(i).is_dir()})
    check_out_dir(out, input_dirs)
    stems = unique_stems(files)
    k = settings.samples
    planned = {stem: [out / f"{stem}_sample{i + 1}.png" for i in range(k)]
               + [out / f"{stem}_bicubic.png", out / f"{stem}.json"] for stem in stems}
    if not args.overwrite:
        for paths in planned.values():
            for p in paths:
                if p.exists():
                    raise UsageError(f"{p} already exists; choose another output folder or pass --overwrite")

    # read and check every input before anything is written
    t0 = time.perf_counter()
    images = [load_still(p) for p in files]
    prepared = [prepare_face(img) for img in images]
    input_hashes = [sha256_file(p) for p in files]
    for p, prep in zip(files, prepared):
        if prep.warning:
            warn(f"{p.name}: {prep.warning}")
    active = any(v is not None for v in settings.attributes.values())
    enh = load_enhancer(args, need_classifier=active)
    t_load = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)

    for path, stem, img, prep, sha in zip(files, stems, images, prepared, input_hashes):
        written: list[Path] = []
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
                          size=[int(img.shape[1]), int(img.shape[0])])
            if enh.classifier_info:
                rec.extra["classifier"] = enh.classifier_info
            samples_u8 = faces.to_uint8(res.samples)
            per_sample = metrics.image_metrics(res.samples, res.lr, prep.hr)
            for i, (img, seed) in enumerate(zip(samples_u8, res.seeds)):
                p = out / f"{stem}_sample{i + 1}.png"
                digest = atomic_save_png(p, img, generated=True)  # labelled in the file itself
                written.append(p)
                rec.add_output(p, digest, kind="sample", index=i + 1, seed=seed, generated=True,
                               **per_sample[i])
            p = out / f"{stem}_bicubic.png"
            # the bicubic baseline interpolates the input: labelled not generated, as in the GUI export
            digest = atomic_save_png(p, faces.to_uint8(res.bicubic)[0], generated=False)
            written.append(p)
            rec.add_output(p, digest, kind="bicubic", **metrics.image_metrics(res.bicubic, res.lr, prep.hr)[0])
            rec.timings = {"load_seconds": round(t_load, 4), "sampling_seconds": round(res.seconds, 4),
                           "seconds_per_sample": round(res.seconds / k, 4), "nfe": res.nfe}
            rec.write(out / f"{stem}.json")
            written.append(out / f"{stem}.json")
            if not args.quiet:
                print(f"{path} -> {out / stem}_sample*.png ({k} sample{'s' if k > 1 else ''}, "
                      f"{res.nfe} evaluations, {res.seconds:.1f} s)")
        except BaseException:
            for p in written:  # nothing half-written: a stem's outputs appear together or not at all
                p.unlink(missing_ok=True)
            raise
    return 0


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    e = sub.add_parser("enhance", help="super-resolve face images",
                       description="Super-resolve faces. A 128x128 input is the HR face frame (degraded to 16x16 "
                       "first); a 16x16 input is the LR itself; other sizes are resized with a warning.")
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder (never an input folder)")
    add_sampler_args(e)
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    e.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_args(e)
    e.set_defaults(func=cmd_enhance)
