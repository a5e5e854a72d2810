"""Gallery matching (the GUI's gallery panel runs it in a worker thread): probe embeddings -> ranked candidates, consensus and rank
stability over all samples. Qt-free; runs inside a worker thread.

Every sample is a different plausible face, so a candidate that ranks high for *all* samples
is a stronger lead than one that tops a single sample. The consensus comes from
``GalleryIndex.query_samples`` (each identity's exact score and rank in every sample). For an
index without it, :func:`consensus` estimates one from the samples' top-K lists: for each
identity found in any sample's top-K it gives

* ``mean_score``: the mean cosine similarity over the samples. Where an identity is missing
  from a sample's top-K, that sample's K-th score stands in (an upper bound), so identities
  seen by few samples are not favoured; ``in_top_k`` says for how many samples it was listed;
* ``rank1_frequency``: the fraction of samples for which it is the best candidate;
* ``ranks``: its rank (1-based) per sample, ``None`` where it is not in the top-K.

``stability`` summarises agreement: how often a sample's rank-1 equals the consensus rank-1,
and the mean share of the consensus top-K found in each sample's top-K.

The run's mean estimate (the model's posterior-mean estimate, not a sample) is matched as its
own probe when given: its ranked list is kept apart, it never enters the consensus or the
stability above, and :func:`mean_agreement` marks each consensus row with the identity's rank
for the mean estimate (``mean_estimate_rank``, None when outside its top-K) and says whether
the mean estimate agrees with the consensus lead.

Every candidate also carries ``calibration`` (:mod:`.calibration`): its score's false-match
rate for its probe kind (samples, bicubic, mean estimate), the strangers expected to score as
high in this gallery and, where the data supports it, a likelihood ratio.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from . import calibration as _cal
from .errors import check_cancel

#: what the consensus rows' rates mean (their score is a mean over samples)
CONSENSUS_RATE_NOTE = ("rates of a single sample's score: for this mean over samples they are an upper bound "
                       "(averaging narrows the strangers' spread)")


def as_candidate(c: Any) -> dict[str, Any]:
    """A gallery Candidate (object or mapping) as {identity, file, score}."""
    get = c.get if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    return {"identity": str(get("identity", "")), "file": str(get("file", "")),
            "score": float(get("score", 0.0))}


def best_per_identity(cands: Sequence[Any], top_k: int) -> list[dict[str, Any]]:
    """Highest-scoring entry per identity, best first, at most ``top_k``."""
    seen: dict[str, dict] = {}
    for c in map(as_candidate, cands):
        if c["identity"] not in seen or c["score"] > seen[c["identity"]]["score"]:
            seen[c["identity"]] = c
    return sorted(seen.values(), key=lambda c: -c["score"])[:top_k]


def consensus(per_sample: dict[str, list[dict[str, Any]]], top_k: int) -> tuple[list[dict], dict]:
    """Consensus rows (best first) and a stability summary over the samples' ranked lists."""
    labels = list(per_sample)
    s = len(labels)
    if s == 0:
        return [], {"samples": 0}
    floor = {lab: (lst[-1]["score"] if lst else 0.0) for lab, lst in per_sample.items()}
    ids: dict[str, dict] = {}
    for lab in labels:
        for rank, c in enumerate(per_sample[lab], 1):
            row = ids.setdefault(c["identity"], {"identity": c["identity"], "file": c["file"],
                                                 "scores": {}, "ranks": {}, "best": -2.0})
            row["scores"][lab] = c["score"]
            row["ranks"][lab] = rank
            if c["score"] > row["best"]:
                row["best"], row["file"] = c["score"], c["file"]
    rows = []
    for r in ids.values():
        scores = [r["scores"].get(lab, floor[lab]) for lab in labels]
        rows.append({
            "identity": r["identity"], "file": r["file"],
            "mean_score": float(np.mean(scores)),
            "rank1_frequency": sum(1 for lab in labels if r["ranks"].get(lab) == 1) / s,
            "in_top_k": f"{len(r['ranks'])}/{s}",
            "ranks": [r["ranks"].get(lab) for lab in labels],
        })
    rows.sort(key=lambda r: (-r["mean_score"], -r["rank1_frequency"], r["identity"]))
    rows = rows[:top_k]
    top_ids = {r["identity"] for r in rows}
    stability = {"samples": s}
    if rows:
        lead = rows[0]["identity"]
        stability["consensus_rank1"] = lead
        stability["rank1_agreement"] = round(
            sum(1 for lab in labels if per_sample[lab] and per_sample[lab][0]["identity"] == lead) / s, 4)
        overlaps = [len(top_ids & {c["identity"] for c in per_sample[lab]}) / max(len(top_ids), 1)
                    for lab in labels]
        stability["top_k_overlap"] = round(float(np.mean(overlaps)), 4)
    return rows, stability


#: the mean estimate's key among the probes and in ``MatchResult.cs`` (the session's item key)
MEAN_PROBE = "mean"
MEAN_PROBE_NOTE = ("the run's mean estimate, matched as its own probe: an estimate, not a sample, and not counted "
                   "in the consensus over samples")


def mean_agreement(rows: list[dict[str, Any]], mean: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mark each consensus row with ``mean_estimate_rank`` (the identity's rank in the mean
    estimate's ranked list ``mean``, best first; None when it is not in that top-K) and return
    what the mean estimate says about the consensus: its own rank-1, whether that is the
    consensus lead, the lead's rank for it, and how many consensus rows are in its top-K."""
    rank = {}
    for i, c in enumerate(mean, 1):
        rank.setdefault(c["identity"], i)
    for r in rows:
        r["mean_estimate_rank"] = rank.get(r["identity"])
    out: dict[str, Any] = {"probe": MEAN_PROBE_NOTE, "rank1": mean[0]["identity"] if mean else None}
    if rows:
        lead = rows[0]["identity"]
        out["lead"] = lead
        out["lead_rank"] = rank.get(lead)
        out["agrees_on_lead"] = bool(mean) and mean[0]["identity"] == lead
        out["consensus_in_top_k"] = f"{sum(1 for r in rows if r['mean_estimate_rank'] is not None)}/{len(rows)}"
    return out


@dataclasses.dataclass
class MatchResult:
    top_k: int
    labels: dict[str, str]  # sample key -> display label
    per_sample: dict[str, list[dict]]  # sample key -> ranked candidates
    bicubic: list[dict]
    consensus: list[dict]
    stability: dict
    cs: dict[str, float]  # key -> CS against the reference (when one is known)
    thumbs: dict[str, Optional[np.ndarray]]  # gallery file -> 64x64 thumbnail
    embedder: str = ""
    gallery: str = ""
    mean: Optional[list[dict]] = None  # the mean estimate's ranked candidates (its own probe; None: not given)
    mean_agreement: dict = dataclasses.field(default_factory=dict)  # see mean_agreement()
    calibration: Optional[dict] = None  # how the rates were made (None: no calibration for the embedder)

    def to_export(self, keys: Optional[Sequence[str]] = None) -> dict[str, Any]:
        keys = list(self.per_sample) if keys is None else [k for k in keys if k in self.per_sample]
        out = {"gallery": self.gallery, "embedder": self.embedder, "top_k": self.top_k,
               "per_sample": {self.labels.get(k, k): self.per_sample[k] for k in keys},
               "consensus": self.consensus, "stability": self.stability, "bicubic": self.bicubic}
        if self.mean is not None:
            out["mean_estimate"] = {"candidates": self.mean, **self.mean_agreement}
        out["calibration"] = self.calibration
        return out


def thumbnail(path: str, size: int = 64) -> Optional[np.ndarray]:
    """A small RGB thumbnail of a gallery file (read-only), or None when unreadable."""
    try:
        from PIL import Image

        from .video import load_still

        img = Image.fromarray(load_still(path))
        img.thumbnail((size, size), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size), (30, 30, 30))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        return np.asarray(canvas)
    except Exception:  # noqa: BLE001 - a missing thumbnail is not an error
        return None


def cs_to_reference(embedder, probes: Sequence[tuple[str, str, np.ndarray]], bicubic: np.ndarray,
                    reference: np.ndarray, mean: Optional[np.ndarray] = None) -> dict[str, float]:
    """CS (face-embedding cosine similarity to the reference HR) of each probe (key, label,
    128x128 uint8), of the bicubic baseline (key ``"bicubic"``) and of the mean estimate when
    given (key :data:`MEAN_PROBE`)."""
    extra = [bicubic] + ([mean] if mean is not None else [])
    e = np.asarray(embedder.embed_aligned([img for _, _, img in probes] + extra + [reference]), dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    n = len(probes)
    out = {key: float(e[i] @ e[-1]) for i, (key, _, _) in enumerate(probes)}
    out["bicubic"] = float(e[n] @ e[-1])
    if mean is not None:
        out[MEAN_PROBE] = float(e[n + 1] @ e[-1])
    return out


def _resolve(file: str, gallery: str) -> str:
    from pathlib import Path

    p = Path(file)
    return str(p if p.is_absolute() or not gallery else Path(gallery) / p)


def _single_probe(index, emb: np.ndarray, top_k: int, deep: int) -> list[dict[str, Any]]:
    """One probe's best ``top_k`` identities (one face each), best first."""
    try:
        return [as_candidate(c) for c in index.query(emb, top_k=top_k, per_identity=True)]
    except TypeError:  # an index without per_identity
        return best_per_identity(index.query(emb, top_k=deep), top_k)


def calibration_summary(cal: Optional[_cal.MatchCalibration]) -> Optional[dict]:
    """What a result record says about the calibration behind its rates."""
    if cal is None:
        return None
    made = cal.made
    return {"file": cal.path and str(cal.path).rsplit("/", 1)[-1], "embedder": cal.embedder,
            "data": made.get("data"), "identities": made.get("identities"), "model": made.get("model"),
            "rates": "false-match rate (FMR): the share of strangers' photos that score at least this high, per "
                     "photo compared; likelihood ratio: how much more probable the score is for the same person "
                     "than for a stranger"}


def annotate_result(res: "MatchResult", cal: Optional[_cal.MatchCalibration], gallery_faces: Optional[int],
                    model_sha256: Optional[str] = None) -> None:
    """Add each candidate's calibrated rates for its probe kind (in place)."""
    if cal is None:
        return
    for lst in res.per_sample.values():
        _cal.annotate(lst, cal, "sample", gallery_faces, model_sha256=model_sha256)
    _cal.annotate(res.bicubic, cal, "bicubic", gallery_faces)
    if res.mean is not None:
        _cal.annotate(res.mean, cal, "mean", gallery_faces, model_sha256=model_sha256)
    _cal.annotate(res.consensus, cal, "sample", gallery_faces, key="mean_score", model_sha256=model_sha256,
                  note=CONSENSUS_RATE_NOTE)
    res.calibration = calibration_summary(cal)


def run_match(index, embedder, probes: Sequence[tuple[str, str, np.ndarray]], bicubic: np.ndarray,
              reference: Optional[np.ndarray], top_k: int, report=None, cancel=None,
              gallery: str = "", mean: Optional[np.ndarray] = None, calibration: Any = "default",
              model_sha256: Optional[str] = None) -> MatchResult:
    """Embed the probes (key, label, 128x128 uint8: the samples), the bicubic baseline, the
    mean estimate (``mean``, its own probe, never a sample) and the reference; rank.

    ``calibration``: a :class:`~.calibration.MatchCalibration`, None (no rates), or
    ``"default"`` (the shipped calibration of the embedder, when there is one);
    ``model_sha256`` is the score model that made the probes (a different model than the
    calibration's is noted on the rates)."""
    extra = [bicubic] + ([mean] if mean is not None else [])
    images = [img for _, _, img in probes] + extra + ([reference] if reference is not None else [])
    emb = np.asarray(embedder.embed_aligned(images), dtype=np.float64)
    n = len(probes)
    i_mean = n + 1 if mean is not None else None
    i_ref = n + len(extra) if reference is not None else None
    keys = [key for key, _, _ in probes]
    deep = max(top_k * 3, top_k + 5)
    check_cancel(cancel)
    if hasattr(index, "query_samples"):
        res = index.query_samples(emb[:n], top_k=top_k)
        per_sample = {k: [as_candidate(c) for c in lst] for k, lst in zip(keys, res.per_sample)}
        rows = [{"identity": c.identity, "file": c.file, "mean_score": float(c.mean_score),
                 "std_score": float(getattr(c, "std_score", 0.0)),
                 "rank1_frequency": float(c.rank1_frequency),
                 "in_top_k": f"{sum(1 for r in c.ranks if r <= top_k)}/{n}", "ranks": [int(r) for r in c.ranks]}
                for c in res.candidates]
        stability = res.stability() if callable(getattr(res, "stability", None)) else {"samples": n}
    else:
        per_sample = {}
        for i, key in enumerate(keys):
            per_sample[key] = best_per_identity(index.query(emb[i], top_k=deep), top_k)
        rows, stability = consensus(per_sample, top_k)
    if report is not None:
        report(n, n + 1)
    bic = _single_probe(index, emb[n], top_k, deep)  # one face per identity, as in the lists above
    mean_list, agreement = None, {}
    if i_mean is not None:  # its own list: the consensus rows and stability above are the samples' alone
        mean_list = _single_probe(index, emb[i_mean], top_k, deep)
        agreement = mean_agreement(rows, mean_list)
    cs: dict[str, float] = {}
    if i_ref is not None:
        ref = emb[i_ref]

        def cos(v):
            return float(np.dot(v, ref) / max(np.linalg.norm(v) * np.linalg.norm(ref), 1e-12))

        for i, (key, _, _) in enumerate(probes):
            cs[key] = cos(emb[i])
        cs["bicubic"] = cos(emb[n])
        if i_mean is not None:
            cs[MEAN_PROBE] = cos(emb[i_mean])
    files = {c["file"] for lst in [*per_sample.values(), bic, rows, mean_list or []] for c in lst}
    path_of = getattr(index, "path_of", None)
    thumbs = {f: thumbnail(str(path_of(f)) if path_of else _resolve(f, gallery)) for f in sorted(files)}
    res = MatchResult(top_k, {k: lab for k, lab, _ in probes}, per_sample, bic, rows, stability, cs, thumbs,
                      embedder=str(getattr(embedder, "name", "")), gallery=gallery, mean=mean_list,
                      mean_agreement=agreement)
    if isinstance(calibration, str):
        calibration = _cal.load_calibration(str(getattr(embedder, "cache_key", getattr(embedder, "name", ""))))
    try:
        faces_n = len(index)
    except TypeError:
        faces_n = None
    annotate_result(res, calibration, faces_n, model_sha256)
    return res
