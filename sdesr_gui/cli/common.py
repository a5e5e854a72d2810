"""Helpers shared by the verbs of the ``sdesr`` command: messages, output-folder checks, sampler
settings and the score model from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import UsageError

__all__ = ["EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "fail", "warn", "check_out_dir", "unique_stems",
           "settings_from_args", "load_enhancer", "add_model_args", "add_sampler_args"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(msg: str) -> int:
    print(f"sdesr: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def warn(msg: str) -> None:
    print(f"sdesr: warning: {msg}", file=sys.stderr)


def check_out_dir(out: Path, input_dirs: list[Path]) -> None:
    from ..core.provenance import is_inside

    for d in input_dirs:
        if is_inside(out, d):
            raise UsageError(f"the output folder {out} is inside the input folder {d}; inputs are evidence, "
                             f"so choose an output folder elsewhere")
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output path {out} exists and is not a folder")


def unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = p.stem
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        stems.append(stem if n == 1 else f"{stem}-{n}")
    return stems


def settings_from_args(args):
    from ..core.enhance import SamplerSettings, parse_attributes

    try:
        attrs = parse_attributes(args.attr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    s = SamplerSettings(
        sampler=args.sampler, steps=args.steps, corrector_steps=args.corrector_steps, snr=args.r,
        predictor=args.predictor, corrector=args.corrector, fast_method=args.fast_method, churn=args.churn,
        h=args.h, guidance_sigma_min=args.guidance_min_sigma, attributes=attrs, samples=args.samples, seed=args.seed, sde=args.sde,
        guidance_cap=args.guidance_cap, mirror=args.mirror, mean_mirror=args.mean_mirror,
        start_sigma=args.start_sigma)
    try:
        s.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return s


def load_enhancer(args, need_classifier: bool, scale: int | None = None):
    """The Enhancer for ``--weights`` or the shipped model of ``scale`` (8 if None); a
    ``--weights`` file of another magnification than a requested scale is refused."""
    from ..core.enhance import CLASSIFIER_WEIGHTS_NAME, Enhancer, find_default_weights, resolve_device, \
        score_weights_name, weights_dir

    device = resolve_device(args.device)
    name = score_weights_name(scale or 8)
    weights = Path(args.weights) if args.weights else find_default_weights(name)
    if weights is None:
        raise UsageError(f"no {scale or 8}x score model is installed ({weights_dir() / name} is missing); "
                         f"pass --weights FILE or train one with `sdesr train score`")
    clf = Path(args.classifier) if getattr(args, "classifier", None) else None
    if clf is None and need_classifier:
        clf = find_default_weights(CLASSIFIER_WEIGHTS_NAME)
        if clf is None:
            raise UsageError("attribute guidance needs the attribute classifier, which is not installed; "
                             "pass --classifier FILE or leave the attributes unknown")
    enh = Enhancer.from_files(weights, clf, device=device)
    if scale is not None and enh.scale_factor != scale:
        raise UsageError(f"{weights.name} is a {enh.scale_factor}x model ({enh.lr_size}x{enh.lr_size} input), "
                         f"not {scale}x")
    return enh


def load_footage_enhancer(mode: str, base):
    """The shipped footage 8x model beside ``base`` (the clean-trained 8x Enhancer, whose
    classifier and device it shares) for ``--footage auto`` / ``on``; None for ``off``, or for
    ``auto`` when it is not installed (``on`` without it is a usage error)."""
    from ..core.enhance import FOOTAGE_WEIGHTS_NAME, Enhancer, find_default_weights, weights_dir

    if mode == "off":
        return None
    fw = find_default_weights(FOOTAGE_WEIGHTS_NAME)
    if fw is None:
        if mode == "on":
            raise UsageError(f"--footage on needs the footage model "
                             f"({weights_dir() / FOOTAGE_WEIGHTS_NAME} is missing)")
        return None
    return Enhancer.from_files(fw, base.classifier_info.get("path") if base.classifier_info else None,
                               device=base.device)


# ------------------------------------------------------------------------------------------
# arguments shared by several verbs
# ------------------------------------------------------------------------------------------
def add_sampling_job_args(p: argparse.ArgumentParser, json_help: str) -> None:
    """The options every batch evaluation shares: --batch, --json, --threads, --quiet, the
    sampler and the model."""
    p.add_argument("--batch", type=int, default=8, help="faces per sampler batch (8)")
    p.add_argument("--json", metavar="FILE", help=json_help)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    add_sampler_args(p)
    add_model_args(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="FILE", help="score model (.safetensors); default: the shipped model")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def add_sampler_args(e: argparse.ArgumentParser) -> None:
    """The sampler flags; choices come from core.sampling and defaults from core.enhance, so a
    sampler or default added there needs no change here."""
    from ..core.enhance import DEFAULT_STEPS, SamplerSettings
    from ..core.sampling import CORRECTORS, FAST_METHODS, PREDICTORS
    from ..core.sde import SDES

    d = SamplerSettings()
    steps = ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
    e.add_argument("--sampler", choices=list(DEFAULT_STEPS), default=d.sampler,
                   help="fast: DPM-Solver++(2M), <= 40 evaluations (default); pc: the paper's predictor-corrector")
    e.add_argument("--steps", type=int, metavar="N", help=f"sampler steps (default: {steps})")
    e.add_argument("--sde", choices=list(SDES), default=d.sde,
                   help="the SDE to sample under; the VE-trained denoiser gives each one's score: "
                   + "; ".join(f"{k}: {c.label}" for k, c in SDES.items()) + f" (default {d.sde})")
    e.add_argument("--corrector-steps", type=int, default=d.corrector_steps, metavar="M",
                   help=f"Langevin steps per PC step ({_num(d.corrector_steps)})")
    e.add_argument("--r", type=float, default=d.snr, help=f"Langevin signal-to-noise ratio r ({_num(d.snr)})")
    e.add_argument("--predictor", choices=list(PREDICTORS), default=d.predictor)
    e.add_argument("--corrector", choices=list(CORRECTORS), default=d.corrector)
    e.add_argument("--fast-method", choices=list(FAST_METHODS), default=d.fast_method)
    e.add_argument("--churn", type=float, default=d.churn,
                   help=f"stochastic churn of the fast sampler ({_num(d.churn)})")
    e.add_argument("--start-sigma", type=float, default=d.start_sigma, metavar="SIGMA",
                   help="fast sampler: start from the mean estimate diffused to noise level SIGMA instead of "
                   "from pure noise, so only the detail that noise hides is drawn anew: samples nearer the "
                   "mean estimate, with less spread than the posterior's (default: off, posterior samples)")
    e.add_argument("--h", type=float, default=d.h, help="guidance scale (default: the classifier's model card)")
    e.add_argument("--guidance-min-sigma", type=float, default=d.guidance_sigma_min, metavar="SIGMA",
                   help="guide only while the noise level is at least SIGMA, so the last steps stay the "
                   "model's own (default: the classifier's model card; 0 = the whole run)")
    e.add_argument("--guidance-cap", type=float, default=d.guidance_cap, metavar="K",
                   help="limit each step's guidance to K times the model's own score (per sample), so "
                   f"one step cannot paint a pattern over the face (default {d.guidance_cap:g}; 0 = no cap)")
    e.add_argument("--attr", metavar="LIST", help="known attributes, e.g. male=1,beard=0,eyeglasses=?")
    e.add_argument("--classifier", metavar="FILE", help="attribute classifier (.safetensors)")
    e.add_argument("--samples", type=int, default=d.samples, metavar="K",
                   help=f"samples per input ({_num(d.samples)})")
    e.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of sample 1; sample k uses seed + k - 1 ({_num(d.seed)})")
    e.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=d.mirror,
                   help="samples: average the denoiser over the left-right mirror image at every step "
                   f"(twice the network work, a little closer to the face; default {'on' if d.mirror else 'off'})")
    e.add_argument("--mean-mirror", action=argparse.BooleanOptionalAction, default=d.mean_mirror,
                   help="the mean estimate: average it with the estimate of the mirrored LR (two network "
                   f"evaluations; default {'on' if d.mean_mirror else 'off'}; --no-mean-mirror gives the "
                   "one-evaluation estimate)")
