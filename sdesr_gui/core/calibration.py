"""Calibrated match scores: what a gallery score means, in rates an analyst can read.

A raw embedding cosine says little: with dlib, strangers routinely score 0.85-0.93 and the
scores shift with the kind of probe (an HR photo, a bicubic blow-up of a 16x16 face, a
generated sample, the mean estimate). A calibration holds, per embedder and per probe kind,
the **genuine** (same person) and **impostor** (different people) score distributions of
single comparisons (one probe against one gallery photo), measured on identities that the
validation never uses (``scripts/calibrate_match.py`` makes it; it holds numbers only).

From it every candidate's score gets

* a **false-match rate** (FMR): the share of strangers' photos that score at least this high,
  e.g. "strangers' photos score this high about 1 time in 350". Where no calibration stranger
  scored that high, only an upper bound is given (three over the number of comparisons: the
  95 % bound for zero events);
* the **expected number of strangers** in the searched gallery that score this high
  (FMR x the gallery's photos): in a big gallery even a rare score is expected several times;
* where the data supports it, a **likelihood ratio**: how much more probable this score is for
  the same person than for a stranger (genuine over impostor density in a window around the
  score, each from at least :data:`LR_MIN_PAIRS` pairs; a lower bound where strangers are too
  few to count).

A candidate's gallery score is its best photo; the rates are per photo compared. For the
consensus over samples (a mean of per-sample scores) the single-sample rates are an upper
bound: averaging narrows the strangers' spread.

Calibration of "sample" and "mean" probes belongs to the score model that made them; when
another model made the probe, :meth:`MatchCalibration.model_note` says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "CALIBRATION_NAME",
    "PROBE_KINDS",
    "BIN",
    "LR_MIN_PAIRS",
    "ScoreHistogram",
    "KindCalibration",
    "MatchCalibration",
    "build_calibration",
    "load_calibration",
    "default_calibration_path",
    "verify",
    "pair_scores",
    "annotate",
    "format_rate",
    "short_rate",
]

#: the calibration file shipped beside the weights
CALIBRATION_NAME = "match_calibration.json"
#: probe kinds (keys in the file) and what each is
PROBE_KINDS = {
    "hr": "HR photo (an aligned face photo)",
    "bicubic": "bicubic blow-up of the face's 16x16 LR",
    "sample": "one generated sample (the fast sampler at its defaults)",
    "mean": "the model's mean estimate",
}
#: histogram bin width on the cosine scale [-1, 1]
BIN = 0.001
_NBINS = int(round(2.0 / BIN))
#: a likelihood ratio needs at least this many genuine and impostor pairs in its window
LR_MIN_PAIRS = 5
#: half-width of the likelihood-ratio window (cosine units)
LR_HALF_WINDOW = 0.01
#: Poisson 95 % upper bounds on a count of 0..4 events (rate bounds from few events)
_POISSON_UPPER = (3.0, 4.74, 6.30, 7.75, 9.15)
#: below this many events at or above a score, the rate is marked rough
_ROUGH_EVENTS = 10
FORMAT = 1


def _bin_of(score: float) -> int:
    return int(min(max(math.floor((float(score) + 1.0) / BIN), 0), _NBINS - 1))


@dataclass
class ScoreHistogram:
    """Counts of scores on the fixed grid (bin ``lo + i`` covers ``[-1 + (lo+i)*BIN, +BIN)``)."""

    lo: int
    counts: np.ndarray  # int64

    @classmethod
    def of(cls, scores: Iterable[float]) -> "ScoreHistogram":
        s = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=np.float64).ravel()
        s = s[np.isfinite(s)]
        if s.size == 0:
            return cls(0, np.zeros(0, np.int64))
        b = np.clip(np.floor((s + 1.0) / BIN).astype(np.int64), 0, _NBINS - 1)
        lo, hi = int(b.min()), int(b.max())
        return cls(lo, np.bincount(b - lo, minlength=hi - lo + 1).astype(np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def at_least(self, score: float) -> float:
        """How many scores are >= ``score`` (the score's own bin counted in proportion)."""
        if self.counts.size == 0:
            return 0.0
        b = _bin_of(score) - self.lo
        if b < 0:
            return float(self.total)
        if b >= self.counts.size:
            return 0.0
        frac = 1.0 - ((float(score) + 1.0) / BIN - (b + self.lo))  # share of the bin above the score
        return float(self.counts[b + 1:].sum()) + min(max(frac, 0.0), 1.0) * float(self.counts[b])

    def within(self, score: float, half: float) -> int:
        """How many scores lie within ``score +- half`` (whole bins)."""
        if self.counts.size == 0:
            return 0
        a = max(_bin_of(score - half) - self.lo, 0)
        b = min(_bin_of(score + half) - self.lo, self.counts.size - 1)
        return int(self.counts[a:b + 1].sum()) if b >= a else 0

    def score_at_tail(self, count: float) -> float:
        """The lowest score with at most ``count`` scores at or above it."""
        c = np.cumsum(self.counts[::-1])[::-1]  # c[i]: scores in bins >= i
        ok = np.nonzero(c <= count)[0]
        i = int(ok[0]) if ok.size else self.counts.size
        return -1.0 + (self.lo + i) * BIN

    def to_dict(self) -> dict:
        return {"lo": self.lo, "counts": [int(v) for v in self.counts]}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreHistogram":
        return cls(int(d["lo"]), np.asarray(d["counts"], dtype=np.int64))

    def summary(self) -> dict:
        if self.total == 0:
            return {"pairs": 0}
        centres = -1.0 + (self.lo + np.arange(self.counts.size) + 0.5) * BIN
        cdf = np.cumsum(self.counts) / self.total
        q = {f"p{int(p * 100):02d}": round(float(centres[np.searchsorted(cdf, p)]), 4) for p in (0.01, 0.5, 0.99)}
        return {"pairs": self.total, "mean": round(float((centres * self.counts).sum() / self.total), 4), **q}


def format_rate(rate: float) -> str:
    """0.00286 -> "1 in 350" (rounded to two significant figures)."""
    if rate <= 0:
        return "never"
    n = 1.0 / rate
    if n < 1.5:
        return "nearly always"
    digits = max(int(math.floor(math.log10(n))) - 1, 0)
    n = round(n / 10 ** digits) * 10 ** digits
    return f"1 in {int(n):,}"


@dataclass
class KindCalibration:
    """Genuine and impostor score distributions of one probe kind."""

    genuine: ScoreHistogram
    impostor: ScoreHistogram
    probes: int = 0
    identities: int = 0
    #: the held-out check (:func:`verify` rows on validation identities), when one was made
    check: list = field(default_factory=list)

    def check_note(self, score: float) -> Optional[str]:
        """What the held-out check says about rates at ``score``: a warning when validation
        strangers reached the highest checked threshold at or below it more than twice as often
        as predicted (the rate shown may then be that many times too low)."""
        rows = [r for r in self.check if r.get("threshold") is not None and r["threshold"] <= score]
        if not rows:
            return None
        r = max(rows, key=lambda r: r["threshold"])
        ratio = r.get("ratio")
        if ratio is None or not math.isfinite(ratio) or ratio <= 2.0:
            return None
        return (f"on validation identities strangers reached scores of {r['threshold']:.3f} and above "
                f"{ratio:.1f} times as often as predicted ({r['observed_events']} of {r['comparisons']:,} "
                "comparisons): the true rate may be that many times higher")

    def fmr(self, score: float) -> dict[str, Any]:
        """False-match rate of ``score``: {"fmr", "fmr_upper", "events", "pairs", "text"}.

        ``fmr`` is None where no calibration stranger scored this high (then ``fmr_upper`` is
        the 95 % bound); ``events`` is how many did (few events: a rough rate).
        """
        n = self.impostor.total
        if n == 0:
            return {"fmr": None, "fmr_upper": None, "events": 0, "pairs": 0,
                    "text": "no calibration data for this probe kind"}
        k = self.impostor.at_least(score)
        if k < 0.5:
            upper = 3.0 / n
            return {"fmr": None, "fmr_upper": upper, "events": 0, "pairs": n,
                    "text": f"no stranger scored this high in {n:,} calibration comparisons "
                            f"(rate under {format_rate(upper)})"}
        rate = k / n
        text = f"strangers' photos score this high about {format_rate(rate).replace('1 in', '1 time in')}"
        if rate >= 0.5:
            text = f"most strangers' photos score this high ({rate:.0%})"
        if k < _ROUGH_EVENTS:
            text += f" (rough: {int(round(k))} of {n:,} calibration comparisons)"
        return {"fmr": rate, "fmr_upper": None, "events": int(round(k)), "pairs": n, "text": text}

    def likelihood_ratio(self, score: float) -> dict[str, Any]:
        """{"lr", "likelihood_ratio_at_least", "text"}: genuine over impostor density near ``score``; None
        (with the reason in ``text``) where the calibration has too few pairs there."""
        g, i = self.genuine.within(score, LR_HALF_WINDOW), self.impostor.within(score, LR_HALF_WINDOW)
        ng, ni = self.genuine.total, self.impostor.total
        if ng == 0 or ni == 0 or g < LR_MIN_PAIRS:
            return {"likelihood_ratio": None, "likelihood_ratio_at_least": None,
                    "text": "too few same-person pairs in the calibration near this score for a likelihood ratio"}
        if i < LR_MIN_PAIRS:
            bound = (g / ng) / (_POISSON_UPPER[i] / ni)
            return {"likelihood_ratio": None, "likelihood_ratio_at_least": bound,
                    "text": f"this score is at least {_times(bound)} more likely for the same person than for a "
                            "stranger"}
        lr = (g / ng) / (i / ni)
        if lr >= 1:
            text = f"this score is about {_times(lr)} more likely for the same person than for a stranger"
        else:
            text = f"this score is about {_times(1 / lr)} more likely for a stranger than for the same person"
        return {"likelihood_ratio": lr, "likelihood_ratio_at_least": None, "text": text}

    def to_dict(self) -> dict:
        return {"probes": self.probes, "identities": self.identities,
                "genuine": self.genuine.to_dict(), "impostor": self.impostor.to_dict(),
                "genuine_summary": self.genuine.summary(), "impostor_summary": self.impostor.summary(),
                "check": self.check}

    @classmethod
    def from_dict(cls, d: dict) -> "KindCalibration":
        return cls(ScoreHistogram.from_dict(d["genuine"]), ScoreHistogram.from_dict(d["impostor"]),
                   int(d.get("probes", 0)), int(d.get("identities", 0)), list(d.get("check") or []))


def _times(x: float) -> str:
    if x >= 100:
        return f"{float(f'{x:.2g}'):,.0f} times"
    if x >= 10:
        return f"{x:.0f} times"
    return f"{x:.1f} times"


@dataclass
class MatchCalibration:
    """One embedder's calibration: a :class:`KindCalibration` per probe kind, and how it was made."""

    embedder: str
    kinds: dict[str, KindCalibration]
    made: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def kind(self, kind: str) -> Optional[KindCalibration]:
        return self.kinds.get(kind)

    def model_note(self, model_sha256: Optional[str], kind: str) -> Optional[str]:
        """A warning when a generated probe's model is not the one this calibration measured."""
        if kind not in ("sample", "mean"):
            return None
        want = (self.made.get("model") or {}).get("sha256")
        if want and model_sha256 and want != model_sha256:
            return ("these rates were measured with another score model's outputs; for this model's probes "
                    "they are approximate")
        return None

    def describe(self, score: float, kind: str, gallery_faces: Optional[int] = None) -> dict[str, Any]:
        """Everything said about one score: FMR, expected strangers in the gallery, likelihood
        ratio, and a text line (the same wording in the GUI, CLI, JSON and report)."""
        kc = self.kinds.get(kind)
        if kc is None:
            return {"calibrated": False, "kind": kind,
                    "text": f"no calibration for {kind!r} probes with the {self.embedder} embedder"}
        out: dict[str, Any] = {"calibrated": True, "kind": kind}
        f = kc.fmr(score)
        out.update({k: f[k] for k in ("fmr", "fmr_upper", "events", "pairs")})
        lr = kc.likelihood_ratio(score)
        out.update({"likelihood_ratio": lr["likelihood_ratio"], "likelihood_ratio_at_least": lr["likelihood_ratio_at_least"]})
        lines = [f["text"]]
        rate = f["fmr"] if f["fmr"] is not None else f["fmr_upper"]
        if gallery_faces and rate is not None:
            exp = rate * gallery_faces
            out["expected_strangers"] = exp
            word = "under " if f["fmr"] is None else "about "
            lines.append(f"in a gallery of {gallery_faces:,} photos, {word}{_count(exp)} strangers' photos are "
                         "expected to score this high")
        lines.append(lr["text"])
        check = kc.check_note(score)
        if check:
            out["check_note"] = check
            lines.append(check)
        out["fmr_text"] = f["text"]
        out["lr_text"] = lr["text"]
        out["text"] = "; ".join(lines)
        return out

    def to_dict(self) -> dict:
        return {"embedder": self.embedder, "made": self.made,
                "kinds": {k: v.to_dict() for k, v in self.kinds.items()}}

    @classmethod
    def from_dict(cls, d: dict, path: str = "") -> "MatchCalibration":
        return cls(str(d["embedder"]), {k: KindCalibration.from_dict(v) for k, v in d["kinds"].items()},
                   dict(d.get("made") or {}), path)


def short_rate(d: Optional[dict]) -> str:
    """A table cell from a :meth:`MatchCalibration.describe` record: "1 in 350", "~1 in 90,000"
    (rough: from fewer than ten strangers' scores), "< 1 in 300,000", or "–" when uncalibrated."""
    if not d or not d.get("calibrated"):
        return "–"
    if d.get("fmr") is not None:  # "~" marks a rate from fewer than ten strangers' scores
        return ("~" if d.get("events", _ROUGH_EVENTS) < _ROUGH_EVENTS else "") + format_rate(d["fmr"])
    return f"< {format_rate(d['fmr_upper'])}" if d.get("fmr_upper") else "–"


def _count(x: float) -> str:
    if x < 0.1:
        return f"{x:.2g}"
    if x < 10:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def build_calibration(embedder: str, genuine: dict[str, Sequence[float]], impostor: dict[str, Sequence[float]],
                      made: dict[str, Any], probes: Optional[dict[str, int]] = None,
                      identities: Optional[dict[str, int]] = None) -> MatchCalibration:
    """A calibration from per-kind genuine and impostor scores of single comparisons."""
    kinds = {}
    for kind in genuine:
        kinds[kind] = KindCalibration(ScoreHistogram.of(genuine[kind]), ScoreHistogram.of(impostor[kind]),
                                      (probes or {}).get(kind, 0), (identities or {}).get(kind, 0))
    return MatchCalibration(embedder, kinds, made)


def default_calibration_path() -> Optional[Path]:
    from .enhance import weights_dir

    p = weights_dir() / CALIBRATION_NAME
    return p if p.is_file() else None


def load_calibration(embedder: str, path: Optional[str | Path] = None) -> Optional[MatchCalibration]:
    """The calibration of ``embedder`` (its cache key) from ``path`` (default: the shipped file),
    or None when there is none. A damaged file raises CheckpointError with one sentence."""
    from .errors import CheckpointError

    p = Path(path) if path is not None else default_calibration_path()
    if p is None or not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
        entry = (doc.get("embedders") or {}).get(embedder)
        return MatchCalibration.from_dict(entry, str(p)) if entry else None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"The match calibration file {p.name} is damaged ({exc}).") from None


def save_calibrations(path: str | Path, cals: Sequence[MatchCalibration], what: str) -> None:
    from .provenance import atomic_write_text

    doc = {"format": FORMAT, "what": what, "probe_kinds": PROBE_KINDS, "bin": BIN,
           "embedders": {c.embedder: c.to_dict() for c in cals}}
    atomic_write_text(Path(path), json.dumps(doc, indent=1) + "\n")


def verify(kc: KindCalibration, impostor: Sequence[float],
           rates: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4)) -> list[dict[str, Any]]:
    """Predicted vs observed FMR on held-out impostor scores: at the threshold where the
    calibration predicts each rate, how often do these strangers reach it?"""
    imp = np.asarray(impostor, dtype=np.float64)
    imp = imp[np.isfinite(imp)]
    rows = []
    for r in rates:
        if kc.impostor.total * r < 1:
            continue  # the calibration cannot place this threshold
        t = kc.impostor.score_at_tail(r * kc.impostor.total)
        predicted = kc.impostor.at_least(t) / kc.impostor.total
        k = int(np.sum(imp >= t))
        observed = k / imp.size if imp.size else float("nan")
        ratio = observed / predicted if predicted > 0 and observed > 0 else None  # None: nothing observed
        rows.append({"target_fmr": r, "threshold": round(t, 4), "predicted_fmr": predicted,
                     "observed_fmr": observed, "observed_events": k, "comparisons": int(imp.size),
                     "ratio": ratio, "within_2x": bool(ratio is not None and 0.5 <= ratio <= 2.0)})
    return rows


def pair_scores(probe_emb: np.ndarray, probe_ids: Sequence[str], gallery_emb: np.ndarray,
                gallery_ids: Sequence[str], exclude: Optional[Sequence[set]] = None,
                gallery_files: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosines of single comparisons: every probe against every gallery
    photo, same identity = genuine; ``exclude[i]`` names gallery files probe ``i`` is not
    compared with (its own photo)."""
    from .metrics import l2_normalize  # the app's one cosine normalisation

    if np.size(probe_emb) == 0 or np.size(gallery_emb) == 0:
        return np.zeros(0), np.zeros(0)
    s = l2_normalize(probe_emb).astype(np.float64) @ l2_normalize(gallery_emb).astype(np.float64).T
    keep = np.ones_like(s, dtype=bool)
    if exclude is not None and gallery_files is not None:
        col = {f: j for j, f in enumerate(gallery_files)}
        for i, ex in enumerate(exclude):
            for f in ex or ():
                if f in col:
                    keep[i, col[f]] = False
    same = np.asarray(probe_ids, dtype=object)[:, None] == np.asarray(gallery_ids, dtype=object)[None, :]
    return s[same & keep], s[~same & keep]


def annotate(candidates: list[dict[str, Any]], cal: Optional[MatchCalibration], kind: str,
             gallery_faces: Optional[int] = None, key: str = "score", model_sha256: Optional[str] = None,
             note: Optional[str] = None) -> None:
    """Add ``calibration`` (see :meth:`MatchCalibration.describe`) to each candidate in place."""
    if cal is None:
        return
    warn = cal.model_note(model_sha256, kind)
    for c in candidates:
        if key not in c:
            continue
        d = cal.describe(float(c[key]), kind, gallery_faces)
        if warn:
            d["note"] = warn
        if note:
            d["note"] = f"{d['note']}; {note}" if d.get("note") else note
        c["calibration"] = d
