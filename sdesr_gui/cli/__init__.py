"""The ``sdesr`` command: every job of the app, headless.

Errors the user can fix (bad input, missing weights, impossible settings) print one line
``sdesr: error: ...`` on stderr and exit with code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

__all__ = ["main", "UsageError"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


from ..core.errors import Cancelled, SdesrError, UsageError  # noqa: E402


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _fail(msg: str) -> int:
    print(f"sdesr: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _warn(msg: str) -> None:
    print(f"sdesr: warning: {msg}", file=sys.stderr)


def _check_out_dir(out: Path, input_dirs: list[Path]) -> None:
    from ..core.provenance import is_inside

    for d in input_dirs:
        if is_inside(out, d):
            raise UsageError(f"the output folder {out} is inside the input folder {d}; inputs are evidence, "
                             f"so choose an output folder elsewhere")
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output path {out} exists and is not a folder")


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = p.stem
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        stems.append(stem if n == 1 else f"{stem}-{n}")
    return stems


def _settings_from_args(args):
    from ..core.enhance import SamplerSettings, parse_attributes

    try:
        attrs = parse_attributes(args.attr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    s = SamplerSettings(
        sampler=args.sampler, steps=args.steps, corrector_steps=args.corrector_steps, snr=args.r,
        predictor=args.predictor, corrector=args.corrector, fast_method=args.fast_method, churn=args.churn,
        h=args.h, attributes=attrs, samples=args.samples, seed=args.seed)
    try:
        s.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return s


def _load_enhancer(args, need_classifier: bool):
    from ..core.enhance import CLASSIFIER_WEIGHTS_NAME, SCORE_WEIGHTS_NAME, Enhancer, find_default_weights, \
        resolve_device, weights_dir

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    weights = Path(args.weights) if args.weights else find_default_weights(SCORE_WEIGHTS_NAME)
    if weights is None:
        raise UsageError(f"no score model is installed ({weights_dir() / SCORE_WEIGHTS_NAME} is missing); "
                         f"pass --weights FILE or train one with `sdesr train score`")
    clf = Path(args.classifier) if getattr(args, "classifier", None) else None
    if clf is None and need_classifier:
        clf = find_default_weights(CLASSIFIER_WEIGHTS_NAME)
        if clf is None:
            raise UsageError("attribute guidance needs the attribute classifier, which is not installed; "
                             "pass --classifier FILE or leave the attributes unknown")
    return Enhancer.from_files(weights, clf, device=device)


# ------------------------------------------------------------------------------------------
# enhance
# ------------------------------------------------------------------------------------------
def cmd_enhance(args) -> int:
    from tqdm import tqdm

    from ..core import faces, metrics
    from ..core.enhance import prepare_face
    from ..core.provenance import atomic_save_png, make_run_record, sha256_file
    from ..core.video import iter_image_files, load_still

    settings = _settings_from_args(args)
    out = Path(args.out).expanduser()
    files = iter_image_files(args.inputs)
    input_dirs = sorted({p.resolve().parent for p in files} |
                        {Path(i).resolve() for i in args.inputs if Path(i).is_dir()})
    _check_out_dir(out, input_dirs)
    stems = _unique_stems(files)
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
            _warn(f"{p.name}: {prep.warning}")
    active = any(v is not None for v in settings.attributes.values())
    enh = _load_enhancer(args, need_classifier=active)
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
            cons = metrics.consistency(res.samples, res.lr.expand(k, -1, -1, -1))
            quality = {}
            if prep.hr is not None:
                hr = prep.hr.expand(k, -1, -1, -1)
                quality = {"psnr": metrics.psnr(res.samples, hr).tolist(),
                           "ssim": metrics.ssim(res.samples, hr).tolist()}
                bic_q = {"psnr": float(metrics.psnr(res.bicubic, prep.hr)[0]),
                         "ssim": float(metrics.ssim(res.bicubic, prep.hr)[0])}
            for i, (img, seed) in enumerate(zip(samples_u8, res.seeds)):
                p = out / f"{stem}_sample{i + 1}.png"
                digest = atomic_save_png(p, img)
                written.append(p)
                entry = {"kind": "sample", "index": i + 1, "seed": seed, "consistency": float(cons[i]),
                         "generated": True}
                for name, vals in quality.items():
                    entry[name] = float(vals[i])
                rec.add_output(p, digest, **entry)
            p = out / f"{stem}_bicubic.png"
            digest = atomic_save_png(p, faces.to_uint8(res.bicubic)[0])
            written.append(p)
            bic = {"kind": "bicubic", "consistency": float(metrics.consistency(res.bicubic, res.lr)[0])}
            if prep.hr is not None:
                bic.update(bic_q)
            rec.add_output(p, digest, **bic)
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


# ------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    import torch

    from ..core import faces
    from ..core.enhance import Enhancer, SamplerSettings, resolve_device
    from ..core.models import ScoreNetConfig, ScoreUNet
    from ..core.provenance import device_info
    from ..core.sde import VESDE

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_init:
        try:
            device = resolve_device(args.device)
        except ValueError as e:
            raise UsageError(str(e)) from None
        torch.manual_seed(0)
        enh = Enhancer(ScoreUNet(ScoreNetConfig()), VESDE(), device=device,
                       model_info={"name": "random-init default config"})
    else:
        enh = _load_enhancer(args, need_classifier=False)
    dev = enh.device
    model = enh.model
    n_params = sum(p.numel() for p in model.parameters())
    lr = torch.rand(1, 3, faces.LR_SIZE, faces.LR_SIZE)
    y = faces.upsample(lr).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # per-NFE latency: one network evaluation at batch 1 (and at batch K)
    def nfe_latency(batch: int) -> float:
        x = torch.randn(batch, 3, 128, 128, device=dev)
        yb = y.expand(batch, -1, -1, -1)
        sig = torch.full((batch,), 1.0, device=dev)
        times = []
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            for i in range(args.repeats + 3):
                sync()
                t = time.perf_counter()
                model.denoise(x, sig, yb)
                sync()
                if i >= 3:
                    times.append(time.perf_counter() - t)
        return statistics.median(times)

    lat1 = nfe_latency(1)
    rows = []
    fast = SamplerSettings(sampler="fast", samples=1)
    res = enh.run(lr, fast)
    rows.append({"sampler": "fast (DPM-Solver++ 2M, defaults)", "steps": fast.n_steps(), "nfe": res.nfe,
                 "seconds_per_sample": res.seconds, "measured": "full run"})
    pc = SamplerSettings(sampler="pc", samples=1)
    n_meas = min(args.pc_steps, pc.n_steps())
    meas = SamplerSettings(sampler="pc", steps=n_meas, samples=1)
    r2 = enh.run(lr, meas)
    per_step = r2.seconds / n_meas
    nfe_pc = pc.n_steps() * (pc.corrector_steps + 1)
    rows.append({"sampler": f"PC defaults (N={pc.n_steps()}, M={pc.corrector_steps})", "steps": pc.n_steps(),
                 "nfe": nfe_pc, "seconds_per_sample": per_step * pc.n_steps(),
                 "measured": f"{n_meas} steps timed, extrapolated"})
    paper_nfe = 2000 * 3
    paper_s = per_step * 2000
    rows.append({"sampler": "paper PC (N=2000, M=2)", "steps": 2000, "nfe": paper_nfe,
                 "seconds_per_sample": paper_s, "measured": f"{n_meas} steps timed, extrapolated"})
    for r in rows:
        r["vs_paper_time"] = r["seconds_per_sample"] / paper_s
    report = {"device": device_info(str(dev)), "model": enh.model_info.get("name"), "parameters": n_params,
              "threads": torch.get_num_threads(), "nfe_latency_ms_batch1": lat1 * 1000, "samplers": rows}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    d = report["device"]
    what = d.get("cuda_device") or f"{d.get('cpu')}, {d.get('cpu_count')} cores"
    print(f"device: {d.get('device')} ({what}), torch threads {report['threads']}")
    print(f"model: {report['model']} ({n_params / 1e6:.2f} M parameters)")
    print(f"one network evaluation (batch 1, 128x128): {lat1 * 1000:.1f} ms")
    print(f"{'sampler':38s} {'NFE':>6s} {'s/sample':>10s} {'x paper':>8s}  how")
    for r in rows:
        print(f"{r['sampler']:38s} {r['nfe']:6d} {r['seconds_per_sample']:10.2f} {r['vs_paper_time']:8.4f}  "
              f"{r['measured']}")
    return 0


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------
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

    from ..core.evaluation import evaluate, format_table
    from ..core.provenance import to_json, versions, device_info, atomic_write_text
    from ..core.video import load_still

    settings = _settings_from_args(args)
    files = _hr_faces_from(args.inputs, args.split)[: args.limit]
    imgs = []
    for p in files:
        im = load_still(p)
        if im.shape[:2] != (128, 128):
            raise UsageError(f"{p.name} is {im.shape[1]}x{im.shape[0]}; evaluation needs aligned 128x128 faces")
        imgs.append(im)
    if args.threads:
        torch.set_num_threads(args.threads)
    enh = _load_enhancer(args, need_classifier=any(v is not None for v in settings.attributes.values()))
    with tqdm(total=len(imgs), desc="evaluate", unit="face", file=sys.stderr, disable=args.quiet) as bar:
        res = evaluate(enh, imgs, {args.name or settings.sampler: settings}, batch=args.batch,
                       progress=lambda d, n: bar.update(d - bar.n))
    summary = res.summary()
    print(format_table(summary))
    if args.json:
        report = {"faces": len(imgs), "settings": settings.to_dict(), "model": enh.model_info,
                  "summary": summary, "seconds": res.seconds, "per_face": res.per_face,
                  "files": [str(p) for p in files], "versions": versions(), "device": device_info(str(enh.device))}
        atomic_write_text(args.json, to_json(report))
    return 0


# ------------------------------------------------------------------------------------------
# prepare / train
# ------------------------------------------------------------------------------------------
def cmd_prepare(args) -> int:
    import torch

    from ..core.datasets import prepare_dataset

    sources = [Path(s).expanduser() for s in args.sources]
    for s in sources:
        if not s.exists():
            raise UsageError(f"the source {s} does not exist")
    out = Path(args.out).expanduser()
    _check_out_dir(out, [s if s.is_dir() else s.parent for s in sources])
    for f in [args.identities, *(args.attributes or [])]:
        if f and not Path(f).is_file():
            raise UsageError(f"the table {f} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    last = [0.0]

    def progress(done: int, total: int, info: dict) -> None:
        now = time.time()
        if not args.quiet and (now - last[0] > 10 or done == total):
            last[0] = now
            rate = done / max(now - t0, 1e-9)
            print(f"{done}/{total} photos: {info['prepared']} prepared, {info['reused']} reused, "
                  f"{info['failed']} failed ({rate:.1f}/s)", file=sys.stderr, flush=True)

    report = prepare_dataset(sources, out, identities_csv=args.identities,
                             attributes_csvs=args.attributes or [], val_fraction=args.val_fraction,
                             min_prob=args.min_prob, progress=progress,
                             log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    print(report.summary())
    return 0


def cmd_train(args) -> int:
    from ..core import training as T

    run = Path(args.run).expanduser()
    if args.kind == "export":
        if not args.out:
            raise UsageError("export needs --out FILE.safetensors")
        out = Path(args.out).expanduser()
        if out.exists() and not args.overwrite:
            raise UsageError(f"{out} exists; pass --overwrite to replace it")
        state = T.load_train_state(run)
        if state is None:
            raise UsageError(f"the folder {run} holds no training run")
        kind = state[0].get("kind")
        if kind == "score":
            meta = T.export_score(run, out)
        else:
            meta = T.export_attributes(run, out, default_h=args.default_h)
        print(f"exported the {kind} run at step {state[0]['step']} to {out} "
              f"({out.stat().st_size / 2**20:.1f} MiB)")
        return 0

    dataset = Path(args.dataset).expanduser()
    if not (dataset / "manifest.csv").is_file():
        raise UsageError(f"{dataset} is not a prepared dataset (no manifest.csv); run 'sdesr prepare' first")
    kw = {k: v for k, v in dict(
        steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, ema=args.ema,
        val_every=args.val_every, ckpt_every=args.ckpt_every, seed=args.seed, device=args.device,
        threads=args.threads, amp=not args.no_amp).items() if v is not None}
    cls = T.ScoreTrainConfig if args.kind == "score" else T.AttrTrainConfig
    if args.kind == "score":
        if args.crop is not None:
            kw["crop"] = args.crop or None
        if args.degradation:
            kw["degradation"] = args.degradation
        if args.p_mean is not None:
            kw["p_mean"] = args.p_mean
        if args.p_std is not None:
            kw["p_std"] = args.p_std
    elif args.default_h is not None:
        kw["default_h"] = args.default_h
    saved = None if args.new else T.load_train_state(run)
    # resuming: start from the run's own settings, so only what changes needs to be given
    base = dict(saved[0]["config"]) if saved is not None and saved[0].get("kind") == (
        "score" if args.kind == "score" else "attributes") else cls().to_dict()
    net = dict(base["net"])
    if args.kind == "score":
        if args.arch:
            from ..core.models import ScoreNetConfig
            net = (ScoreNetConfig.v2() if args.arch == "v2" else ScoreNetConfig()).to_dict()
        if args.sigma_data is not None:
            net["sigma_data"] = args.sigma_data
        if args.channels:
            try:
                net["channels"] = [int(c) for c in args.channels.split(",")]
            except ValueError:
                raise UsageError("--channels must be comma-separated integers, e.g. 16,32,64,96") from None
    try:
        cfg = cls.from_dict({**base, **kw, "net": net})
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid training settings: {e}") from None
    fn = T.train_score if args.kind == "score" else T.train_attributes
    res = fn(dataset, run, cfg, resume=not args.new,
             log=(lambda m: print(m, file=sys.stderr)), show_progress=not args.quiet)
    state = "cancelled" if res.cancelled else ("finished" if res.done else "paused")
    sps = f", {res.sec_per_step:.3f} s/step" if res.sec_per_step else ""
    print(f"{args.kind} run {state} at step {res.step}/{res.total}{sps}; state in {res.run_dir}")
    if res.last_val:
        print("last validation: " + ", ".join(f"{k} {v:.4g}" for k, v in res.last_val.items()
                                              if isinstance(v, (int, float))))
    return EXIT_INTERRUPTED if res.cancelled else 0


# ------------------------------------------------------------------------------------------
# faces from footage: detect
# ------------------------------------------------------------------------------------------
def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or not all(v == v and abs(v) != float("inf") for v in vals):
        raise UsageError(f"{what} needs {n} comma-separated numbers, got {text!r}")
    return vals


def _frames_to_scan(args, src) -> list[int]:
    n = int(src.frame_count)
    if args.frame is not None:
        if not 0 <= args.frame < n:
            raise UsageError(f"--frame {args.frame} is outside {Path(args.input).name}, which has frames 0 to {n - 1}")
        return [int(args.frame)]
    if args.every is not None:
        if args.every < 1:
            raise UsageError("--every must be at least 1")
        return list(range(0, n, int(args.every)))
    if n == 1:
        return [0]
    return list(range(0, n, max(1, int(round(src.fps or 1)))))  # one frame per second


def cmd_detect(args) -> int:
    from tqdm import tqdm

    from ..core import faces
    from ..core.provenance import atomic_save_png, make_run_record, sha256_file
    from ..core.video import open_source

    inp = Path(args.input).expanduser()
    out = Path(args.out).expanduser()
    _check_out_dir(out, [inp.resolve().parent] if inp.exists() else [])
    box = _floats(args.box, 4, "--box X0,Y0,X1,Y1") if args.box else None
    eyes = _floats(args.eyes, 4, "--eyes LX,LY,RX,RY") if args.eyes else None
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise UsageError("--box needs X0 < X1 and Y0 < Y1")
    if eyes is not None and (eyes[0], eyes[1]) == (eyes[2], eyes[3]):
        raise UsageError("--eyes needs two different points")
    stem = inp.stem
    record_path = out / f"{stem}_faces.json"
    if record_path.exists() and not args.overwrite:
        raise UsageError(f"{record_path} already exists; choose another output folder or pass --overwrite")

    t0 = time.perf_counter()
    with open_source(inp) as src:
        frames = _frames_to_scan(args, src)
        if (box or eyes) and len(frames) != 1:
            raise UsageError("a hand-drawn --box or --eyes belongs to one frame; give --frame I")
        sha = sha256_file(inp)
        found: list[tuple[int, float, int, object]] = []  # frame, timestamp, face number, AlignedFace
        empty: list[int] = []
        with tqdm(total=len(frames), desc="detect", unit="frame", file=sys.stderr, disable=args.quiet) as bar:
            for i in frames:
                img = src.frame(i)
                if box or eyes:
                    try:
                        aligned = [faces.extract_face(img, box=box, eyes=None if eyes is None else
                                                      [eyes[:2], eyes[2:]])]
                    except ValueError as e:
                        raise UsageError(str(e)) from None
                else:
                    dets = faces.detect_faces_in_frame(img, min_face=args.min_face, min_prob=args.min_prob,
                                                       upscale=True if args.thorough else "auto")
                    aligned = [faces.extract_face(img, face=f) for f in dets]
                if not aligned:
                    empty.append(i)
                for j, af in enumerate(aligned):
                    found.append((i, src.timestamp(i), j, af))
                bar.update(1)
        info = src.info()
    seconds = time.perf_counter() - t0

    names = []
    for i, _, j, _ in found:
        base = f"{stem}_f{i:06d}_{j:02d}"
        names.append((out / f"{base}.png", out / f"{base}_lr.png"))
    if not args.overwrite:
        for pair in names:
            for p in pair:
                if p.exists():
                    raise UsageError(f"{p} already exists; choose another output folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    rec = make_run_record("detect", frame={"frames": frames})
    rec.notice = ("Aligned crops of the input (not generated); a face enlarged to fill the frame carries no "
                  "more detail than the footage.")
    rec.add_input(inp, sha256=sha, **{k: v for k, v in info.items() if k != "path"})
    method = "manual" if (box or eyes) else ("MTCNN (facenet-pytorch), tiled 2x pass" if args.thorough
                                             else "MTCNN (facenet-pytorch), tiled 2x pass when nothing is found")
    rec.extra["detector"] = {"method": method, "min_face": args.min_face, "min_prob": args.min_prob}
    rec.extra["frames_without_faces"] = empty
    rec.extra["faces"] = []
    rec.timings = {"detect_seconds": round(seconds, 4)}
    written: list[Path] = []
    try:
        for (i, ts, j, af), (crop_p, lr_p) in zip(found, names):
            d1 = atomic_save_png(crop_p, af.crop)
            written.append(crop_p)
            d2 = atomic_save_png(lr_p, af.lr)
            written.append(lr_p)
            entry = {"frame": i, "timestamp_s": round(float(ts), 6), "face": j, "crop": crop_p.name,
                     "lr": lr_p.name, **af.to_dict()}
            rec.extra["faces"].append(entry)
            rec.add_output(crop_p, d1, kind="aligned_face", frame=i, face=j)
            rec.add_output(lr_p, d2, kind="lr_input", frame=i, face=j)
            if af.small or af.lr_interpolated:
                _warn(f"frame {i}, face {j}: {af.note}")
        rec.write(record_path)
        written.append(record_path)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    if not args.quiet:
        print(f"{inp}: {len(found)} face(s) in {len(frames) - len(empty)} of {len(frames)} frame(s) -> {out} "
              f"({record_path.name})")
        if empty and len(frames) == 1:
            print("no face was found; draw one by hand with --box X0,Y0,X1,Y1 (and --eyes LX,LY,RX,RY)",
                  file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------
# gallery: index, match, eval-match, bench-gallery
# ------------------------------------------------------------------------------------------
def _embedder_from_args(args):
    from ..core.gallery import get_embedder

    return get_embedder(args.embedder, args.embedder_weights)


def _open_index(args, embedder):
    from ..core.gallery import GalleryIndex

    gallery = Path(args.gallery).expanduser()
    if not gallery.is_dir():
        raise UsageError(f"the gallery folder {gallery} does not exist" if not gallery.exists()
                         else f"the gallery {gallery} is not a folder")
    return GalleryIndex(gallery, embedder, cache_dir=args.cache_dir)


def _update_index(index, quiet: bool, verbose_skips: bool = True):
    from tqdm import tqdm

    from ..core.gallery import IndexCancelled

    with tqdm(desc="index", unit="file", file=sys.stderr, disable=quiet) as bar:
        def progress(done, total, name=""):
            bar.total = total
            bar.update(done - bar.n)

        try:
            rep = index.update(progress=progress)
        except KeyboardInterrupt:
            print("sdesr: interrupted; every file indexed so far is kept", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except IndexCancelled as e:  # pragma: no cover - the CLI has no cancel button
            rep = e.report
    if verbose_skips and not quiet:
        for f, why in rep.skipped:
            _warn(f"skipped {f}: {why}")
    return rep


def cmd_index(args) -> int:
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    rep = _update_index(index, args.quiet)
    if args.json:
        print(json.dumps({"gallery": str(index.folder), "database": str(index.db_path), "embedder": emb.info(),
                          **rep.to_dict()}, indent=2))
    else:
        print(f"{index.folder}: {rep.summary()} ({rep.seconds:.1f} s; index {index.db_path})")
    return 0


def _probe_frame(path: Path, min_prob: float = 0.9):
    """A probe image as a canonical face frame: 128x128 as is, 16x16 as LR (bicubic), else detected."""
    from ..core import faces
    from ..core.video import load_still

    img = load_still(path)
    h, w = img.shape[:2]
    if (h, w) == (faces.FRAME_SIZE, faces.FRAME_SIZE):
        return img, "frame"
    if (h, w) == (faces.LR_SIZE, faces.LR_SIZE):
        return faces.to_uint8(faces.upsample(faces.to_tensor(img)))[0], "lr (bicubic)"
    found = faces.detect_faces(img, min_prob=min_prob)
    if not found:
        return None, "no face"
    return faces.align_face(img, found[0].landmarks)[0], "detected"


def _match_json_target(value, gallery: Path, probes) -> "Path | None":
    """``--json``: None (no JSON), ``-``/no value (stdout: returns None) or a file outside the
    gallery and the probes' folders (those are evidence and never written to)."""
    from ..core.provenance import is_inside

    if value is None or value == "-":
        return None
    target = Path(value).expanduser()
    if target.exists() and target.is_dir():
        raise UsageError(f"--json {target} is a folder; give a file name")
    folders = [gallery] + [Path(p).expanduser() if Path(p).expanduser().is_dir() else Path(p).expanduser().parent
                           for p in probes]
    for d in folders:
        if is_inside(target, d):
            raise UsageError(f"--json {target} is inside {d}; galleries and probes are evidence and are "
                             "never written to, so choose a file elsewhere")
    return target


def cmd_match(args) -> int:
    from ..core.video import iter_image_files

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    probes = iter_image_files(args.probes)
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    json_file = _match_json_target(args.json, index.folder, args.probes)
    frames = []
    for p in probes:
        fr, how = _probe_frame(p)
        if fr is None:
            raise UsageError(f"no face was found in the probe {p.name}; crop it with `sdesr detect` "
                             f"(--box for a face the detector misses)")
        frames.append(fr)
    if not args.no_update:
        _update_index(index, args.quiet or args.json == "-", verbose_skips=False)
    if len(index) == 0:
        raise UsageError(f"the gallery {index.folder} holds no indexed face")
    vecs = emb.embed_aligned(frames)
    bic_vecs = None
    if args.bicubic:  # the baseline: each probe's own 16x16 LR, bicubic-upsampled
        from ..core import faces

        bic = faces.to_uint8(faces.upsample(faces.degrade(faces.frames_to_tensor(frames))))
        bic_vecs = emb.embed_aligned(bic)

    def listed(v):
        return [{"identity": c.identity, "file": str(index.path_of(c.file)), "score": round(c.score, 6)}
                for c in index.query(v, args.top, per_identity=not args.per_file)]

    results = []
    for k, (p, v) in enumerate(zip(probes, vecs)):
        results.append({"probe": str(p), "candidates": listed(v)})
        if bic_vecs is not None:
            results[-1]["bicubic_candidates"] = listed(bic_vecs[k])
    consensus = index.query_samples(vecs, args.top) if args.consensus and len(vecs) > 1 else None
    if args.json:
        if consensus is not None:
            doc = consensus.to_dict()
            for c in doc["candidates"]:
                c["file"] = str(index.path_of(c["file"]))
            text = json.dumps({"probes": results, "consensus": doc}, indent=2)
        else:
            text = json.dumps(results, indent=2)
        if json_file is None:
            print(text)
            return 0
        from ..core.provenance import atomic_write_text

        json_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_file, text + "\n")
        if not args.quiet:
            print(f"{len(results)} probe(s) ranked against {index.folder} -> {json_file}", file=sys.stderr)
        return 0
    print(f"gallery {index.folder} ({len(index)} faces, embedder {emb.name}); candidates are investigative "
          "leads, not identifications")
    for r in results:
        print(f"\n{r['probe']}")
        for k, c in enumerate(r["candidates"], 1):
            print(f"  {k:3d}. {c['score']:.4f}  {c['identity']:24s} {c['file']}")
        if "bicubic_candidates" in r:
            print("  bicubic baseline of its 16x16 LR:")
            for k, c in enumerate(r["bicubic_candidates"], 1):
                print(f"  {k:3d}. {c['score']:.4f}  {c['identity']:24s} {c['file']}")
    if consensus is not None:
        st = consensus.stability()
        print(f"\nconsensus over {consensus.samples} samples (rank-1 agreement {st.get('rank1_agreement', 0):.0%}, "
              f"{st.get('distinct_rank1', 0)} distinct rank-1 identities)")
        print(f"  {'':3s}  {'mean':>6s} {'sd':>6s} {'rank1':>6s} {'mean rank':>9s}  identity")
        for k, c in enumerate(consensus.candidates, 1):
            print(f"  {k:3d}. {c.mean_score:6.4f} {c.std_score:6.4f} {c.rank1_frequency:6.0%} {c.mean_rank:9.1f}  "
                  f"{c.identity}")
    return 0


def _probe_files(folder: Path) -> list[tuple[Path, str]]:
    from ..core.gallery import identity_of
    from ..core.video import is_still_file

    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_still_file(name):
                p = Path(root) / name
                out.append((p, identity_of(p.relative_to(folder))))
    return out


def cmd_eval_match(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..core import faces
    from ..core.gallery import evaluate_identification
    from ..core.provenance import atomic_write_text, device_info, sha256_file, to_json, versions

    probes_dir = Path(args.probes).expanduser()
    if not probes_dir.is_dir():
        raise UsageError(f"the probe folder {probes_dir} does not exist or is not a folder")
    if args.json:
        _check_out_dir(Path(args.json).expanduser().parent, [probes_dir.resolve(), Path(args.gallery).resolve()])
    settings = None if args.no_sr else _settings_from_args(args)
    emb = _embedder_from_args(args)
    index = _open_index(args, emb)
    items = _probe_files(probes_dir)[: args.limit] if args.limit else _probe_files(probes_dir)
    if not items:
        raise UsageError(f"no probe images were found in {probes_dir}")
    enh = None
    if settings is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        enh = _load_enhancer(args, need_classifier=any(v is not None for v in settings.attributes.values()))
    rep = _update_index(index, args.quiet, verbose_skips=False)
    files, _, shas, _ = index.entries()
    by_sha: dict[str, list[str]] = {}
    for f, s in zip(files, shas):
        by_sha.setdefault(s, []).append(f)

    hr, ids, exclude, used, skipped = [], [], [], [], []
    for p, ident in tqdm(items, desc="probes", unit="face", file=sys.stderr, disable=args.quiet):
        fr, how = _probe_frame(p)
        if fr is None:
            skipped.append((str(p), how))
            continue
        hr.append(fr)
        ids.append(ident)
        exclude.append(by_sha.get(sha256_file(p), []))  # a probe never matches its own photo
        used.append(str(p))
    if not hr:
        raise UsageError(f"no face was found in any probe image in {probes_dir}")
    t0 = time.perf_counter()
    hr_t = faces.frames_to_tensor(hr)
    lr = faces.degrade(hr_t)
    kinds = {"hr": hr, "bicubic": faces.to_uint8(faces.upsample(lr))}
    sr_seconds = None
    if enh is not None:
        sr = []
        b = max(1, int(args.batch))
        with tqdm(total=len(hr), desc="super-resolve", unit="face", file=sys.stderr, disable=args.quiet) as bar:
            for k in range(0, len(hr), b):
                s = enh.run_many(lr[k:k + b], settings)
                sr += faces.to_uint8(s)
                bar.update(s.shape[0])
        kinds["sr"] = sr
        sr_seconds = time.perf_counter() - t0
    vec = {k: emb.embed_aligned(v) for k, v in kinds.items()}
    table = {}
    for k, v in vec.items():
        r = evaluate_identification(index, v, ids, exclude)
        r["cs_to_hr"] = float(np.mean(np.sum(v * vec["hr"], axis=1)))
        table[k] = r
    print(f"gallery {index.folder}: {rep.faces} faces, {len(index.identities())} identities; "
          f"{len(hr)} probes ({table['hr']['counted']} with their identity in the gallery), embedder {emb.name}")
    print(f"{'probe':10s} {'Rank-1':>7s} {'Rank-5':>7s} {'Rank-10':>7s} {'AUC':>7s} {'CS->HR':>7s}")
    for k, r in table.items():
        print(f"{k:10s} {r['rank1']:7.3f} {r['rank5']:7.3f} {r['rank10']:7.3f} {r['auc']:7.3f} {r['cs_to_hr']:7.3f}")
    if skipped and not args.quiet:
        _warn(f"{len(skipped)} probe(s) without a face were left out")
    if args.json:
        report = {"gallery": str(index.folder), "probes_folder": str(probes_dir), "embedder": emb.info(),
                  "index": rep.to_dict(), "probes": used, "probe_identities": ids, "skipped_probes": skipped,
                  "results": table, "sampler": settings.to_dict() if settings else None,
                  "model": enh.model_info if enh else None, "sr_seconds": sr_seconds,
                  "versions": versions(), "device": device_info(str(enh.device) if enh else "cpu"),
                  "notice": "Rank-N and AUC of an evaluation set; candidates are leads, not identifications."}
        target = Path(args.json).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, to_json(report))
    return 0


def cmd_bench_gallery(args) -> int:
    import numpy as np

    from ..core.gallery import benchmark_query
    from ..core.provenance import device_info

    if args.size < 1 or args.queries < 1 or args.samples < 1:
        raise UsageError("--faces, --queries and --samples must be at least 1")
    r = benchmark_query(n=args.size, dim=args.dim, queries=args.queries, samples=args.samples, top_k=args.top)
    if args.embed:
        try:
            emb = _embedder_from_args(args)
            from PIL import Image

            frame = np.asarray(Image.open(Path(__file__).resolve().parents[2] / "resources" /
                                          "sample_face.png").convert("RGB"))
            emb.embed_aligned([frame])
            times = []
            for _ in range(5):
                t = time.perf_counter()
                emb.embed_aligned([frame])
                times.append((time.perf_counter() - t) * 1000)
            r["embed_ms"] = {"embedder": emb.name, "median_ms": float(np.median(times))}
        except Exception as e:  # noqa: BLE001 - the embedding time is optional
            r["embed_ms"] = {"error": str(e)}
    d = device_info("cpu")
    r["device"] = d
    if args.json:
        print(json.dumps(r, indent=2, default=str))
        return 0
    print(f"machine: {d.get('cpu')}, {d.get('cpu_count')} cores; numpy {np.__version__}")
    print(f"synthetic gallery: {r['faces']} faces, {r['identities']} identities, {r['dim']}-D; "
          f"SQLite {r['database_bytes'] / 2**20:.1f} MiB, loaded in {r['load_seconds'] * 1000:.0f} ms")
    for key, label in (("query", f"one probe, top-{r['top_k']} faces"),
                       ("query_per_identity", f"one probe, top-{r['top_k']} identities"),
                       ("query_samples", f"{r['samples']} samples, consensus")):
        s = r[key]
        print(f"{label:34s} median {s['median_ms']:7.2f} ms   p95 {s['p95_ms']:7.2f} ms   max {s['max_ms']:7.2f} ms")
    if "embed_ms" in r and "median_ms" in r["embed_ms"]:
        print(f"embedding one probe ({r['embed_ms']['embedder']}): {r['embed_ms']['median_ms']:.1f} ms")
    return 0


# ------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="FILE", help="score model (.safetensors); default: the shipped model")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")


def _add_sampler_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("--sampler", choices=["fast", "pc"], default="fast",
                   help="fast: DPM-Solver++(2M), <= 40 evaluations (default); pc: the paper's predictor-corrector")
    e.add_argument("--steps", type=int, metavar="N", help="sampler steps (default: fast 40, pc 1000)")
    e.add_argument("--corrector-steps", type=int, default=2, metavar="M", help="Langevin steps per PC step (2)")
    e.add_argument("--r", type=float, default=0.16, help="Langevin signal-to-noise ratio r (0.16)")
    e.add_argument("--predictor", choices=["reverse_diffusion", "euler_maruyama", "none"],
                   default="reverse_diffusion")
    e.add_argument("--corrector", choices=["langevin", "none"], default="langevin")
    e.add_argument("--fast-method", choices=["dpmpp_2m", "heun"], default="dpmpp_2m")
    e.add_argument("--churn", type=float, default=0.0, help="stochastic churn of the fast sampler (0)")
    e.add_argument("--h", type=float, default=None, help="guidance scale (default: the classifier's model card)")
    e.add_argument("--attr", metavar="LIST", help="known attributes, e.g. male=1,beard=0,eyeglasses=?")
    e.add_argument("--classifier", metavar="FILE", help="attribute classifier (.safetensors)")
    e.add_argument("--samples", type=int, default=1, metavar="K", help="samples per input (1)")
    e.add_argument("--seed", type=int, default=0, help="seed of sample 1; sample k uses seed + k - 1 (0)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sdesr", description="SDE-SR Studio: score-based SDE face super-resolution "
                                 "(16x16 -> 128x128). Generated faces are investigative leads, not identifications.")
    from .. import __version__

    ap.add_argument("--version", action="version", version=f"sdesr {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("enhance", help="super-resolve face images",
                       description="Super-resolve faces. A 128x128 input is the HR face frame (degraded to 16x16 "
                       "first); a 16x16 input is the LR itself; other sizes are resized with a warning.")
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder (never an input folder)")
    _add_sampler_args(e)
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    e.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _add_model_args(e)
    e.set_defaults(func=cmd_enhance)

    b = sub.add_parser("bench", help="measure network and sampler speed on this machine")
    _add_model_args(b)
    b.add_argument("--random-init", action="store_true", help="benchmark the default architecture untrained")
    b.add_argument("--repeats", type=int, default=20, help="timed network evaluations (20)")
    b.add_argument("--pc-steps", type=int, default=30, help="PC steps to time before extrapolating (30)")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    v = sub.add_parser("evaluate", help="PSNR/SSIM/consistency of a model vs bicubic on aligned HR faces")
    v.add_argument("inputs", nargs="+", metavar="INPUT", help="folders/files of 128x128 faces, or a prepared dataset")
    v.add_argument("--split", default="val", help="dataset split to use when INPUT is a prepared dataset (val)")
    v.add_argument("--limit", type=int, default=200, help="at most this many faces (200)")
    v.add_argument("--batch", type=int, default=8, help="faces per sampler batch (8)")
    v.add_argument("--name", help="label of this setting in the table")
    v.add_argument("--json", metavar="FILE", help="write the full report (per-face values) here")
    v.add_argument("--threads", type=int, default=0)
    v.add_argument("--quiet", action="store_true")
    _add_sampler_args(v)
    _add_model_args(v)
    v.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("prepare", help="detect and align faces into a training dataset",
                        description="Detect (MTCNN) and align every face to the canonical 128x128 frame, "
                        "write images/ and manifest.csv with a deterministic train/val split by identity. "
                        "Re-running reuses what is already prepared.")
    pr.add_argument("sources", nargs="+", metavar="SRC", help="folders (or files) of photos")
    pr.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to write (never inside a source)")
    pr.add_argument("--identities", metavar="CSV", help="file,identity table (default: sub-folder name, else one identity per file)")
    pr.add_argument("--attributes", metavar="CSV", action="append",
                    help="attribute table: CelebA-style 1/0 labels or teacher probabilities (repeatable)")
    pr.add_argument("--val-fraction", type=float, default=0.1, help="share of identities in validation (0.1)")
    pr.add_argument("--min-prob", type=float, default=0.9, help="minimum detection probability (0.9)")
    pr.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=cmd_prepare)

    tr = sub.add_parser("train", help="train the score network or the attribute classifier; export a run",
                        description="Train (resumable: re-run the same command to continue) or export a run's "
                        "EMA weights as a .safetensors file for weights/.")
    tr.add_argument("kind", choices=["score", "attributes", "export"])
    tr.add_argument("dataset", nargs="?", metavar="DATASET", help="prepared dataset (not for export)")
    tr.add_argument("--run", required=True, metavar="DIR", help="run folder: checkpoints, metrics.jsonl, grids")
    tr.add_argument("--new", action="store_true", help="refuse to resume an existing run")
    tr.add_argument("--steps", type=int, help="total steps of the schedule")
    tr.add_argument("--batch", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--warmup", type=int)
    tr.add_argument("--ema", type=float)
    tr.add_argument("--crop", type=int, help="score: random training crop (0 = full 128 frame; default 64)")
    tr.add_argument("--degradation", choices=["bicubic", "realistic"], help="score: LR degradation (bicubic)")
    tr.add_argument("--sigma-data", type=float, help="score: EDM sigma_data (std of HR - bicubic)")
    tr.add_argument("--p-mean", type=float, help="score: mean of log sigma in training (EDM P_mean, -1.2)")
    tr.add_argument("--p-std", type=float, help="score: std of log sigma in training (EDM P_std, 1.2)")
    tr.add_argument("--channels", help="score: U-Net widths, e.g. 16,32,64,96")
    tr.add_argument("--arch", choices=["v1", "v2"],
                    help="score: network design of a new run: v1 = the 1.9 M full-resolution U-Net, "
                    "v2 = pixel-unshuffle by 4 then a wide U-Net at 32/16/8 (default: v1)")
    tr.add_argument("--default-h", type=float, help="attributes/export: guidance scale written to the model")
    tr.add_argument("--val-every", type=int)
    tr.add_argument("--ckpt-every", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device", help="cpu, cuda or auto (auto)")
    tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    tr.add_argument("--out", metavar="FILE", help="export: the .safetensors file to write")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

    d = sub.add_parser("detect", help="find, align and crop the faces of a still or a video",
                       description="Detect every face (MTCNN) in a still or in video frames, align each to the "
                       "128x128 face frame and write the crops, their 16x16 LR inputs and a JSON record "
                       "(boxes, landmarks, frame numbers, timestamps). A video is scanned once per second "
                       "unless --frame or --every says otherwise.")
    d.add_argument("input", metavar="INPUT", help="a still (PNG, JPEG, BMP, TIFF, ...) or a video (MP4, AVI, MKV, ...)")
    fr = d.add_mutually_exclusive_group()
    fr.add_argument("--frame", type=int, metavar="I", help="only frame I (0-based)")
    fr.add_argument("--every", type=int, metavar="N", help="every N-th frame (default: one frame per second)")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (never the input's folder)")
    d.add_argument("--min-face", type=float, default=12, metavar="PX", help="smallest face side to look for (12)")
    d.add_argument("--min-prob", type=float, default=0.9, help="smallest detection probability kept (0.9)")
    d.add_argument("--thorough", action="store_true",
                   help="always add the tiled 2x upscaled pass (finds faces down to about 8 px; slower)")
    d.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a face drawn by hand (pixels) where detection fails")
    d.add_argument("--eyes", metavar="LX,LY,RX,RY", help="the two eye centres (image left first): exact alignment")
    d.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_detect)

    def gallery_args(p, need_gallery=True):
        if need_gallery:
            p.add_argument("--gallery", required=True, metavar="GALLERY", help="folder of known faces (only read)")
        p.add_argument("--embedder", choices=["dlib", "facenet"], default="dlib",
                       help="face embedder: dlib (offline, default) or facenet (VGGFace2; downloads its weights)")
        p.add_argument("--embedder-weights", metavar="PATH",
                       help="facenet: a local weights file; dlib: a folder with its model files")
        p.add_argument("--cache-dir", metavar="DIR",
                       help="where the index lives (default: the user cache folder; never inside the gallery)")

    ix = sub.add_parser("index", help="index a gallery folder of known faces (incremental)",
                        description="Embed the largest face of every image in GALLERY (recursively; identity = "
                        "sub-folder name, else file stem). Only new and changed files are embedded again; "
                        "the index lives in the user cache folder, never in the gallery.")
    ix.add_argument("gallery", metavar="GALLERY")
    gallery_args(ix, need_gallery=False)
    ix.add_argument("--json", action="store_true", help="print the report as JSON")
    ix.add_argument("--quiet", action="store_true")
    ix.set_defaults(func=cmd_index)

    m = sub.add_parser("match", help="rank gallery identities for probe faces",
                       description="Rank the gallery for each probe: a 128x128 image is taken as an aligned face "
                       "frame (e.g. a sample from `sdesr enhance`), a 16x16 one as an LR input (bicubic), any "
                       "other photo is detected and aligned. The index is brought up to date first. Candidates "
                       "are investigative leads, not identifications.")
    m.add_argument("probes", nargs="+", metavar="PROBE", help="probe images or folders")
    gallery_args(m)
    m.add_argument("--top", type=int, default=10, metavar="K", help="candidates per probe (10)")
    m.add_argument("--per-file", action="store_true", help="rank gallery files, not identities")
    m.add_argument("--consensus", action="store_true",
                   help="the probes are samples of one face: add the mean score and rank-1 stability per candidate")
    m.add_argument("--bicubic", action="store_true",
                   help="also rank the bicubic baseline (each probe degraded to 16x16 and upsampled)")
    m.add_argument("--no-update", action="store_true", help="use the index as it is")
    m.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help='write [{"probe", "candidates": [{"identity", "file", "score"}]}] as JSON to FILE '
                        '(never inside the gallery or a probe folder); no FILE or "-": print it')
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_match)

    em = sub.add_parser("eval-match", help="Rank-1/5/10 and verification AUC of HR, bicubic and SR probes",
                        description="Align each probe (identity = sub-folder name, else file stem), degrade it "
                        "to 16x16, super-resolve it with the score model and match HR, bicubic and SR against "
                        "the gallery. A probe never matches its own photo if that is in the gallery.")
    gallery_args(em)
    em.add_argument("--probes", required=True, metavar="DIR", help="folder of probe photos")
    em.add_argument("--limit", type=int, default=0, help="at most this many probes (0: all)")
    em.add_argument("--batch", type=int, default=8, help="faces per sampler batch (8)")
    em.add_argument("--no-sr", action="store_true", help="HR and bicubic only (no score model needed)")
    em.add_argument("--json", metavar="FILE", help="write the full report here")
    em.add_argument("--threads", type=int, default=0)
    em.add_argument("--quiet", action="store_true")
    _add_sampler_args(em)
    _add_model_args(em)
    em.set_defaults(func=cmd_eval_match)

    bg = sub.add_parser("bench-gallery", help="time gallery queries on a synthetic 10,000-face index")
    bg.add_argument("--faces", "--size", dest="size", type=int, default=10_000,
                    help="faces in the synthetic gallery (10000)")
    bg.add_argument("--dim", type=int, default=128, help="embedding size (128, as dlib)")
    bg.add_argument("--queries", type=int, default=200, help="timed queries (200)")
    bg.add_argument("--samples", type=int, default=8, help="samples per consensus query (8)")
    bg.add_argument("--top", type=int, default=10)
    bg.add_argument("--embed", action="store_true", help="also time embedding one probe")
    gallery_args(bg, need_gallery=False)
    bg.add_argument("--json", action="store_true")
    bg.set_defaults(func=cmd_bench_gallery)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "command", None):
        ap.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except SdesrError as e:
        return _fail(str(e).rstrip("."))
    except Cancelled as e:
        print(f"sdesr: {str(e).rstrip('.')}; unfinished outputs were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("sdesr: interrupted; unfinished outputs were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
