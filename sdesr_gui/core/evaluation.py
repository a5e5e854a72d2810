"""Measure a score model on aligned HR faces: PSNR, SSIM, consistency (and CS) vs bicubic.

Used by ``sdesr evaluate`` and for the model card.  Each HR face is degraded to the model's LR
size (16x16 for the 8x model, 8x8 for the 16x) exactly as in training -- clean bicubic, or one of
the fixed footage-grade strengths of :data:`degradations.STRENGTHS` with a per-face seed --
super-resolved with the given sampler settings, and compared with the HR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import degradations, faces, metrics
from .enhance import Enhancer, SamplerSettings
from .presets import DEFAULT_MEAN_MIRROR

__all__ = ["EvalResult", "evaluate", "summarize", "paired_difference", "format_differences", "MEAN_ROW"]

#: the name of the mean-estimate row of an evaluation
MEAN_ROW = "mean estimate"


def summarize(values: Sequence[float]) -> dict:
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of ``a - b`` over the faces where both are finite, with its standard error
    (std / sqrt(n)): how far one method is from another on the same faces and LR, and how
    sure that is (about 2 s.e. either side is the 95 % interval)."""
    x = np.asarray(list(a), dtype=np.float64) - np.asarray(list(b), dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": float("nan"), "se": float("nan"), "n": 0}
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return {"mean": float(x.mean()), "se": se, "n": int(x.size)}


@dataclass
class EvalResult:
    per_face: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method -> metric -> values
    seconds: dict[str, float] = field(default_factory=dict)
    #: per face, the model choice of the footage mode (``footage_verdict`` and the model used); [] without
    choices: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {m: {k: summarize(v) for k, v in d.items()} for m, d in self.per_face.items()}

    def differences(self, ref: str = "bicubic") -> dict:
        """Every other row minus ``ref``, face by face: {method: {metric: paired_difference}}."""
        base = self.per_face[ref]
        return {m: {k: paired_difference(v, base[k]) for k, v in d.items() if k in base}
                for m, d in self.per_face.items() if m != ref}

    def mismatches(self) -> dict[str, list[int]]:
        """Per sampler row, the faces (0-based) whose sample does not match its input
        (:func:`metrics.lr_mismatch` against the same face's mean estimate); {} without the
        mean-estimate row."""
        if MEAN_ROW not in self.per_face:
            return {}
        ref = self.per_face[MEAN_ROW]["consistency"]
        return {m: [i for i, (c, r) in enumerate(zip(d["consistency"], ref))
                    if metrics.lr_mismatch({"consistency": c}, {"consistency": r})]
                for m, d in self.per_face.items() if m not in ("bicubic", MEAN_ROW)}


def evaluate(
    enhancer: Enhancer,
    hr_images: Iterable[np.ndarray],
    settings: dict[str, SamplerSettings],
    *,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
    total: int | None = None,
    mean_estimate: bool = False,
    mean_mirror: bool = DEFAULT_MEAN_MIRROR,
    degradation: str = "clean",
    seed: int = 0,
    footage: Enhancer | None = None,
    footage_mode: str = "auto",
) -> EvalResult:
    """Evaluate bicubic and each named sampler setting on 128x128 uint8 HR faces.

    Faces are processed ``batch`` at a time; sample i of the run uses seed settings.seed + i so
    results do not depend on the batch size.  ``embed_fn`` ([B,3,128,128] in [0,1] -> [B,D])
    adds CS (cosine similarity of SR and HR embeddings).  ``mean_estimate`` adds the row
    :data:`MEAN_ROW`: the model's posterior-mean estimate (averaged with its mirror image's when
    ``mean_mirror``, two network evaluations per face; one without; an estimate, not a sample).
    ``degradation`` names a strength of :data:`degradations.STRENGTHS`; face i gets its noise
    from seed ``seed * 1_000_003 + i`` (the degraded validation set).

    ``footage``: the footage 8x model beside ``enhancer`` (the clean-trained one), to measure
    what the app delivers: with ``footage_mode`` "auto" each face goes to the model the app
    picks for its LR (:meth:`Enhancer.footage_verdict`, as ``sdesr enhance --footage auto``),
    with "on" to the footage model; ``EvalResult.choices`` records each face's verdict.
    """
    if footage is not None:
        if footage_mode not in ("auto", "on"):
            raise ValueError(f"footage_mode must be 'auto' or 'on', not {footage_mode!r}")
        if footage.lr_size != enhancer.lr_size:
            raise ValueError("the footage model and the clean-trained model must take the same LR size")
    if degradation not in degradations.STRENGTHS:
        raise ValueError(f"unknown degradation {degradation!r} (one of {', '.join(degradations.STRENGTHS)})")
    base = degradations.STRENGTHS[degradation]
    lr_size = enhancer.lr_size
    res = EvalResult()
    methods = ["bicubic", *([MEAN_ROW] if mean_estimate else []), *settings]
    for m in methods:
        res.per_face[m] = {"psnr": [], "ssim": [], "consistency": []}
        if embed_fn is not None:
            res.per_face[m]["cs"] = []
        res.seconds[m] = 0.0
    imgs = list(hr_images)
    n = len(imgs) if total is None else min(total, len(imgs))
    done = 0
    for start in range(0, n, batch):
        chunk = imgs[start:start + batch][: n - start]
        hr = torch.cat([faces.to_tensor(im) for im in chunk])
        lr = torch.stack([degradations.degrade(hr[i], replace(base, seed=seed * 1_000_003 + start + i), lr_size)
                          for i in range(hr.shape[0])])
        outs = {"bicubic": faces.upsample(lr)}
        # which model takes each face: the clean-trained one unless the footage mode says otherwise
        models = [enhancer] * lr.shape[0]
        if footage is not None:
            for i in range(lr.shape[0]):
                v = footage.footage_verdict(lr[i:i + 1]) if footage_mode == "auto" else \
                    {"degraded": True, "text": "footage mode on: the footage model"}
                res.choices.append({**v, "model": "footage" if v["degraded"] else "clean"})
                if v["degraded"]:
                    models[i] = footage
        groups = [(e, [i for i, m in enumerate(models) if m is e]) for e in dict.fromkeys(models)]
        if mean_estimate:
            t0 = time.perf_counter()
            outs[MEAN_ROW] = torch.cat([models[i].mean_estimate(lr[i:i + 1], mean_mirror) for i in range(lr.shape[0])])
            res.seconds[MEAN_ROW] += time.perf_counter() - t0
        for name, st in settings.items():
            t0 = time.perf_counter()
            out = torch.empty(lr.shape[0], 3, faces.FRAME_SIZE, faces.FRAME_SIZE)
            for enh, idx in groups:  # face i keeps seed settings.seed + i whichever model takes it
                out[idx] = enh.run_many(lr[idx], replace(st, samples=1), cancel=cancel,
                                        seeds=[st.seed + start + i for i in idx])
            outs[name] = out
            res.seconds[name] += time.perf_counter() - t0
        emb_hr = embed_fn(hr) if embed_fn is not None else None
        for name, sr in outs.items():
            d = res.per_face[name]
            for m in metrics.image_metrics(sr, lr, hr):
                for key in ("psnr", "ssim", "consistency"):
                    d[key].append(m[key])
            if emb_hr is not None:
                d["cs"] += [float(v) for v in metrics.cosine_similarity(embed_fn(sr), emb_hr)]
        done += len(chunk)
        if progress is not None:
            progress(done, n)
    return res


def _metric_rows(first: str, keys: list[str], rows: dict, cell: Callable[[dict], str]) -> list[str]:
    """A header (each metric's unit and direction, core.metrics.METRICS) and one line per row of
    ``rows`` ({name: {metric: stats}}); ``cell`` formats one metric's stats, "-" where missing."""
    heads = [metrics.metric_header(k) for k in keys]
    widths = [max(17, len(h)) for h in heads]
    lines = [f"{first:24s} " + " ".join(f"{h:>{w}s}" for h, w in zip(heads, widths))]
    for m, d in rows.items():
        lines.append(f"{m:24s} " + " ".join(cell(d[k]).rjust(w) if k in d and d[k]["n"] else f"{'-':>{w}s}"
                                            for k, w in zip(keys, widths)))
    return lines


def format_table(summary: dict) -> str:
    """Plain-text table: one row per method, mean +- std per metric; the headers carry each
    metric's unit and direction (core.metrics.METRICS) and a last line says what they measure."""
    keys = ["psnr", "ssim", "consistency", "cs"]
    lines = _metric_rows("method", keys, summary, lambda c: f"{c['mean']:8.3f} ± {c['std']:6.3f}")
    gists = "; ".join(f"{metrics.METRICS[k].label}: {metrics.METRICS[k].gist}" for k in keys)
    lines.append(f"{gists}.")
    lines.append("↑ higher is better, ↓ lower is better; each cell is the mean ± std over the faces.")
    return "\n".join(lines)


def format_differences(diffs: dict, ref: str = "bicubic") -> str:
    """Plain-text table of :meth:`EvalResult.differences`: each row minus ``ref`` on the same
    faces, mean ± standard error; a row beats ``ref`` on a metric when its difference points the
    metric's better way by more than about 2 s.e."""
    keys = [k for k in ("psnr", "ssim", "consistency", "cs") if any(k in d for d in diffs.values())]
    def cell(c: dict) -> str:
        se = f"{c['se']:6.3f}" if np.isfinite(c["se"]) else f"{'-':>6s}"  # one face: no s.e.
        return f"{c['mean']:+8.3f} ± {se}"

    lines = _metric_rows("minus " + ref, keys, diffs, cell)
    lines.append(f"each cell: the mean difference from {ref} on the same faces and LR ± its standard error "
                 "(about 2 s.e. either side is the 95 % interval).")
    return "\n".join(lines)
