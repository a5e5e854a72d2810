"""``sdesr prepare`` (faces into a training dataset) and ``sdesr train`` (score network,
attribute classifier, export of a run)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core.datasets import MAX_COLOR_JITTER, MAX_SCALE_JITTER
from ..core.models.score_net import ARCHITECTURES
from .common import EXIT_INTERRUPTED, UsageError, check_out_dir


def cmd_prepare(args) -> int:
    import torch

    from ..core.datasets import prepare_dataset

    sources = [Path(s).expanduser() for s in args.sources]
    for s in sources:
        if not s.exists():
            raise UsageError(f"the source {s} does not exist")
    out = Path(args.out).expanduser()
    check_out_dir(out, [s if s.is_dir() else s.parent for s in sources])
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
        q = "int8" if args.int8 else None
        if kind == "score":
            extra = {} if args.footage_threshold is None else {"footage_threshold": args.footage_threshold}
            meta = T.export_score(run, out, quantize=q, metadata=extra)
        else:
            extra = {} if args.guidance_min_sigma is None else {"guidance_sigma_min": args.guidance_min_sigma}
            meta = T.export_attributes(run, out, default_h=args.default_h, metadata=extra, quantize=q)
        print(f"exported the {kind} run at step {state[0]['step']} to {out} "
              f"({out.stat().st_size / 2**20:.1f} MiB)")
        return 0

    dataset = Path(args.dataset).expanduser()
    if not (dataset / "manifest.csv").is_file():
        raise UsageError(f"{dataset} is not a prepared dataset (no manifest.csv); run 'sdesr prepare' first")
    kw = {k: v for k, v in dict(
        steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, cooldown=args.cooldown, ema=args.ema,
        val_every=args.val_every, ckpt_every=args.ckpt_every, seed=args.seed, device=args.device,
        threads=args.threads, amp=not args.no_amp).items() if v is not None}
    if args.init:
        init = Path(args.init).expanduser()
        if not init.is_file():
            raise UsageError(f"the warm-start file {init} does not exist")
        kw["init"] = str(init.resolve())
    cls = T.ScoreTrainConfig if args.kind == "score" else T.AttrTrainConfig
    if args.kind == "score":
        if args.crop is not None:
            kw["crop"] = args.crop or None
        if args.degradation:
            kw["degradation"] = args.degradation
        if args.scale:
            kw["lr_size"] = 128 // args.scale
        if args.p_mean is not None:
            kw["p_mean"] = args.p_mean
        if args.p_std is not None:
            kw["p_std"] = args.p_std
        if args.shift is not None:
            kw["shift"] = args.shift
        if args.scale_jitter is not None:
            kw["scale_jitter"] = args.scale_jitter
        if args.color_jitter is not None:
            kw["color_jitter"] = args.color_jitter
        if args.uniform_frac is not None:
            kw["uniform_frac"] = args.uniform_frac
    else:
        if args.default_h is not None:
            kw["default_h"] = args.default_h
        if args.adv_eps is not None:
            kw["adv_eps"] = args.adv_eps
        if args.adv_steps is not None:
            kw["adv_steps"] = args.adv_steps
    saved = None if args.new else T.load_train_state(run)
    # resuming: start from the run's own settings, so only what changes needs to be given
    base = dict(saved[0]["config"]) if saved is not None and saved[0].get("kind") == (
        "score" if args.kind == "score" else "attributes") else cls().to_dict()
    net = dict(base["net"])
    if args.kind == "score":
        if args.arch:
            net = ARCHITECTURES[args.arch]().to_dict()
        if args.sigma_data is not None:
            net["sigma_data"] = args.sigma_data
        if args.dropout is not None:
            if not 0.0 <= args.dropout < 1.0:
                raise UsageError("--dropout must be at least 0 and below 1")
            net["dropout"] = args.dropout
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


def register(sub) -> None:
    """Add this module's sub-command(s) to ``sub`` (the sub-parsers of ``sdesr``)."""
    pr = sub.add_parser("prepare", help="detect and align faces into a training dataset",
                        description="Detect (MTCNN) and align every face to the canonical 128x128 frame, "
                        "write images/ and manifest.csv with a deterministic train/val split by identity. "
                        "Re-running reuses what is already prepared.")
    pr.add_argument("sources", nargs="+", metavar="SRC", help="folders (or files) of photos")
    pr.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to write (never inside a source)")
    pr.add_argument("--identities", metavar="CSV",
                    help="file,identity table (default: sub-folder name, else one identity per file)")
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
    tr.add_argument("--cooldown", type=int, metavar="N",
                    help="the last N steps of --steps take the learning rate linearly to zero (0: none)")
    tr.add_argument("--ema", type=float)
    tr.add_argument("--crop", type=int, help="score: random training crop (0 = full 128 frame; default 64)")
    tr.add_argument("--degradation", choices=["bicubic", "realistic"],
                    help="score: LR degradation: bicubic (clean) or realistic (footage-grade: a mix of clean "
                    "and blurred, noisy, JPEG / H.264-like compressed LR; core.degradations)")
    tr.add_argument("--scale", type=int, choices=[8, 16],
                    help="score: magnification of a new run: 8 (16 -> 128, default) or 16 (8 -> 128)")
    tr.add_argument("--sigma-data", type=float, help="score: EDM sigma_data (std of HR - bicubic)")
    tr.add_argument("--p-mean", type=float, help="score: mean of log sigma in training (EDM P_mean, -1.2)")
    tr.add_argument("--p-std", type=float, help="score: std of log sigma in training (EDM P_std, 1.2)")
    tr.add_argument("--uniform-frac", type=float, metavar="F",
                    help="score: share of each batch whose noise level is drawn log-uniform over the whole "
                         "range up to sigma_max instead of log-normal (0.25); the mean estimate is the "
                         "denoiser at sigma_max, so a larger share trains it more")
    tr.add_argument("--shift", type=int, metavar="PX",
                    help="score: random translation of each training face by up to PX pixels before the LR "
                    "is made (new LR/HR pairs from the same photos; 0 = none, the default)")
    tr.add_argument("--scale-jitter", type=float, metavar="S",
                    help="score: random zoom of each training face about the frame centre by up to 1 + S "
                    "(log-uniform in [1/(1+S), 1+S], bicubic) before the LR is made (0 = none, the default; "
                    f"at most {MAX_SCALE_JITTER})")
    tr.add_argument("--color-jitter", type=float, metavar="C",
                    help="score: random brightness, contrast and saturation factors in [1-C, 1+C] for each "
                    f"training face before the LR is made (0 = none, the default; at most {MAX_COLOR_JITTER})")
    tr.add_argument("--dropout", type=float, metavar="P",
                    help="score: dropout in the U-Net's residual blocks (0 = none, the default; no weights, so "
                    "a warm start from weights trained without it works)")
    tr.add_argument("--channels", help="score: U-Net widths, e.g. 16,32,64,96")
    tr.add_argument("--arch", choices=list(ARCHITECTURES),
                    help="score: network design of a new run: v1 = the 1.9 M full-resolution U-Net, "
                    "v2 = pixel-unshuffle by 4 then a wide U-Net at 32/16/8 with a thin full-resolution "
                    "head, v2-patch = v2 without that head (default: v1)")
    tr.add_argument("--init", metavar="FILE", help="a new run starts from these weights (.safetensors of "
                    "the same kind); parts the file lacks start fresh")
    tr.add_argument("--default-h", type=float, help="attributes/export: guidance scale written to the model")
    tr.add_argument("--adv-eps", type=float, metavar="EPS",
                    help="attributes: adversarial training, L2 radius per image in [0, 1] units (0 = off): a "
                    "robust classifier's gradients look like image features, which guidance needs")
    tr.add_argument("--adv-steps", type=int, metavar="K", help="attributes: PGD steps per update (2)")
    tr.add_argument("--guidance-min-sigma", type=float, metavar="SIGMA",
                    help="export of an attribute run: the guidance interval written to the model card "
                    "(guide while sigma >= SIGMA)")
    tr.add_argument("--val-every", type=int)
    tr.add_argument("--ckpt-every", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--device", help="cpu, cuda or auto (auto)")
    tr.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    tr.add_argument("--out", metavar="FILE", help="export: the .safetensors file to write")
    tr.add_argument("--footage-threshold", type=float, metavar="RMS",
                    help="export of a footage-grade score run: the LR residual (0-255 RMS the model does not "
                    "explain) above which the app's automatic choice takes this model (scripts/footage_threshold.py)")
    tr.add_argument("--int8", action="store_true",
                    help="export: store convolution / linear weights as int8 with a scale per output "
                    "channel (half the size of fp16; the shipped score model is stored so)")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)
