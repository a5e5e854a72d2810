"""Exporting a run: images, the JSON run record and a self-contained HTML report (Qt-free).

An export is one new folder, created next to nothing else, holding

* the evidence-derived images (the aligned face crop, its LR and the bicubic baseline, an
  interpolation), marked *not generated* in a PNG text chunk and in the run record;
* the model's mean estimate (kind ``mean``: an estimate, not a sample) and every exported
  sample, marked *generated* in the file name, in a PNG text chunk, in the run record and in
  the report (PNGs are written by :func:`~sdesr_gui.core.provenance.atomic_save_png`, the
  writer the CLI uses too);
* with two or more exported samples, the map of where they disagree (kind ``uncertainty``,
  generated), shown in the report beside the mean estimate with its scale and a region table,
  and its numbers in the record's ``uncertainty`` block;
* ``run.json``: the provenance record (:class:`~sdesr_gui.core.provenance.RunRecord`);
* ``report.html``: one file with every image embedded as base64 PNG (the very bytes written
  next to it), the settings, seeds, gallery candidates and the SHA-256 of every output;
* ``SHA256SUMS``: ``sha256sum``-compatible hashes of all the files above.

The folder is assembled under a hidden temporary name in the chosen parent folder and renamed
into place at the end, so a failed export leaves nothing half-written behind. Exports refuse
to go into an input or gallery folder: inputs are evidence.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from .provenance import (
    GENERATED_NOTICE,
    atomic_save_png,
    atomic_write_bytes,
    is_inside,
    make_run_record,
    sha256_bytes,
    sha256_file,
    to_json,
    utc_now_iso,
)

__all__ = [
    "ExportError",
    "ExportImage",
    "ExportJob",
    "ExportResult",
    "CANDIDATE_NOTICE",
    "safe_stem",
    "check_export_parent",
    "export_run",
    "build_run_record",
    "build_html_report",
    "read_sha256sums",
    "verify_export",
]

#: Shown with every list of gallery candidates.
CANDIDATE_NOTICE = ("Gallery candidates are investigative leads for a trained examiner, "
                    "not identifications.")

SUMS_NAME = "SHA256SUMS"
RECORD_NAME = "run.json"
REPORT_NAME = "report.html"


from .errors import ExportError  # noqa: E402  (re-exported)


@dataclasses.dataclass
class ExportImage:
    """One image of the export.

    ``kind`` is ``crop`` (aligned face from the input), ``lr`` (its low-resolution version),
    ``reference`` (a known high-resolution face), ``bicubic``, ``mean`` (the model's mean
    estimate: generated, an estimate and not a sample), ``sample`` or ``uncertainty`` (the
    rendered std map of the exported samples, with its scale). ``info`` holds
    per-image facts for the record (seed, metrics, sampler settings of a re-run ...).
    """

    key: str
    image: np.ndarray
    kind: str
    generated: bool
    caption: str = ""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExportJob:
    """Everything an export writes (built by the GUI from its state, or by any other caller)."""

    images: list[ExportImage]
    input: dict[str, Any] = dataclasses.field(default_factory=dict)  # path, sha256, size, ...
    frame: dict[str, Any] = dataclasses.field(default_factory=dict)  # index, timestamp, count
    face: dict[str, Any] = dataclasses.field(default_factory=dict)  # box, prob, landmarks, ...
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    classifier: Optional[dict[str, Any]] = None
    sampler: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    candidates: Optional[dict[str, Any]] = None
    timings: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    title: str = "SDE-SR Studio run"
    uncertainty: Optional[dict[str, Any]] = None  # the record's block (core.uncertainty); None: not given


@dataclasses.dataclass
class ExportResult:
    folder: Path
    files: dict[str, str]  # file name -> sha256 (every file in the folder)
    record: dict[str, Any]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def safe_stem(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``-_.``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return (s or "run")[:limit]


def check_export_parent(parent: os.PathLike | str, forbidden: Iterable[os.PathLike | str]) -> Path:
    """Refuse a destination inside any ``forbidden`` folder (inputs, galleries)."""
    p = Path(parent).expanduser()
    for f in forbidden:
        if f is None:
            continue
        fp = Path(f).expanduser()
        if fp.exists() and is_inside(p, fp):
            raise ExportError(f"The folder {p} is inside {fp}, which holds inputs or gallery "
                              "images (evidence); choose a folder elsewhere.")
    if p.exists() and not p.is_dir():
        raise ExportError(f"{p} exists and is not a folder.")
    return p


def _file_name(img: ExportImage, used: set[str]) -> str:
    prefix = "GENERATED_" if img.generated else ""
    base = f"{prefix}{safe_stem(img.key)}"
    name, n = f"{base}.png", 2
    while name in used:
        name, n = f"{base}-{n}.png", n + 1
    used.add(name)
    return name


# ------------------------------------------------------------------------------------------
# run record
# ------------------------------------------------------------------------------------------
def build_run_record(job: ExportJob, outputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON run record of an export (``outputs``: name, sha256 and facts per image)."""
    seeds = [int(o["seed"]) for o in outputs if o.get("seed") is not None]
    rec = make_run_record(
        "gui-enhance", device=job.device, seed=(min(seeds) if seeds else job.sampler.get("seed")),
        model=job.model, sampler=job.sampler, attributes=job.sampler.get("attributes") or {},
        frame=job.frame)
    entry = {k: v for k, v in job.input.items() if k not in ("path", "sha256")}
    if job.input.get("path"):
        rec.add_input(job.input["path"], sha256=job.input.get("sha256"), face=job.face, **entry)
    for o in outputs:
        facts = {k: v for k, v in o.items() if k not in ("file", "sha256")}
        rec.add_output(o["file"], o["sha256"], **facts)
    if job.classifier:
        rec.extra["classifier"] = job.classifier
    if job.candidates:
        rec.extra["gallery_candidates"] = job.candidates
        rec.extra["candidate_notice"] = CANDIDATE_NOTICE
    if job.notes:
        rec.extra["notes"] = list(job.notes)
    rec.timings = {k: v for k, v in job.timings.items() if isinstance(v, (int, float))}
    out = rec.to_dict()
    if job.uncertainty is not None:
        out["uncertainty"] = job.uncertainty
    # what each number means: unit, which way is better, one line (core.metrics.METRICS)
    out["metric_legend"] = _metrics().metric_legend(_metrics().metric_keys_in(outputs, job.uncertainty))
    return out


def _metrics():
    """core.metrics, imported when a record or report is built (it loads torch; this module does not)."""
    from . import metrics

    return metrics


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;
     background:#fafbfc;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:10px 14px;border-radius:6px;margin:12px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #d5d9e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5} code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
     word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px;width:256px}
figure img{width:256px;height:256px;image-rendering:pixelated;display:block}
figcaption{font-size:12px;margin-top:6px} td.small{font-size:12px;max-width:420px}
figure.map{width:auto} figure img.map{width:auto;height:auto;image-rendering:auto}
.tag{display:inline-block;font-size:11px;font-weight:600;padding:1px 6px;border-radius:4px}
.gen{background:#b3261e;color:#fff} .real{background:#2e7d32;color:#fff} .interp{background:#5c6bc0;color:#fff}
.warn{background:#e65100;color:#fff}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(_fmt(v))}</td></tr>"
                   for k, v in d.items() if v is not None and v != {} and v != [])
    return f"<table>{rows}</table>" if rows else "<p>(none)</p>"


def _cand_table(cands: Sequence[Mapping[str, Any]], extra_cols: Sequence[str] = (),
                score_label: str = "score (cosine, higher = more similar)") -> str:
    """Ranked candidates; when calibrated, each with its false-match rate (table cell) and what
    its score means (the same sentence the GUI shows on hover)."""
    from .calibration import short_rate

    if not cands:
        return "<p>(no candidates)</p>"
    calibrated = any(c.get("calibration") for c in cands)
    rate_head = "<th>strangers scoring this high</th><th>what the score means</th>" if calibrated else ""
    head = f"<tr><th>rank</th><th>identity</th><th>{_e(score_label)}</th>{rate_head}" + "".join(
        f"<th>{_e(c)}</th>" for c in extra_cols) + "<th>gallery file</th></tr>"
    rows = []
    for i, c in enumerate(cands, 1):
        extra = "".join(f"<td>{_e(_fmt(c.get(col)))}</td>" for col in extra_cols)
        score = c.get("score", c.get("mean_score"))
        rate = ""
        if calibrated:
            d = c.get("calibration") or {}
            text = d.get("text", "") + (f" (note: {d['note']})" if d.get("note") else "")
            rate = f"<td>{_e(short_rate(d))}</td><td class='small'>{_e(text)}</td>"
        rows.append(f"<tr><td>{i}</td><td>{_e(c.get('identity', ''))}</td>"
                    f"<td>{_e(_fmt(score))}</td>{rate}{extra}<td class='mono'>{_e(c.get('file', ''))}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _calibration_words(cal: Optional[Mapping[str, Any]]) -> str:
    if not cal:
        return ("<p>No score calibration for this embedder: the scores are raw cosines (higher = more similar), "
                "not probabilities.</p>")
    return (f"<p>Scores are calibrated ({_e(cal.get('file'))}; {_e(cal.get('data'))}): "
            f"{_e(cal.get('rates'))}.</p>")


#: the per-image metrics, in the order the GUI's tiles show them
_IMAGE_METRICS = ("consistency", "psnr", "ssim", "cs")


def _metric_th(key: str) -> str:
    m = _metrics()
    return f"<th title='{_e(m.METRICS[key].line)}'>{_e(m.metric_header(key))}</th>"


def _metrics_section(outputs: Sequence[Mapping[str, Any]], uncertainty: Optional[Mapping[str, Any]]) -> str:
    """The images' metrics as a table (units and arrows in the headers) and, under it, the
    legend of every metric this report shows (the record's ``metric_legend``)."""
    M = _metrics()
    rows_of = [o for o in outputs if any(k in o for k in M.METRICS)]
    keys = [k for k in _IMAGE_METRICS if any(k in o for o in rows_of)]
    keys += [k for k in M.metric_keys_in(rows_of) if k not in keys]
    legend = M.metric_legend(M.metric_keys_in(outputs, uncertainty))
    if not legend:
        return ""
    parts = ["<h2 id='metrics'>Metrics</h2>"]
    if keys:
        head = "<tr><th>image</th>" + "".join(_metric_th(k) for k in keys) + "</tr>"
        rows = "".join(
            f"<tr data-file='{_e(o['file'])}'><td>{_e(o.get('caption') or o['file'])}</td>"
            + "".join(f"<td>{_e(M.format_value(k, o[k]) if k in o else '–')}</td>" for k in keys) + "</tr>"
            for o in rows_of)
        parts.append(f"<table id='metrics-table'>{head}{rows}</table>")
        if "psnr" not in keys:
            parts.append("<p>No reference HR was known: PSNR, SSIM and CS were not measured.</p>")
    rows = "".join(
        f"<tr data-metric='{_e(k)}'><td>{_e(M.metric_header(k))}</td><td>{_e(v['unit'])}</td>"
        f"<td>{_e(M.METRICS[k].direction)}</td><td>{_e(v['range'])}</td><td>{_e(v['what'])}</td></tr>"
        for k, v in legend.items())
    parts.append("<h3>What the numbers mean (here and in run.json)</h3><table id='metric-legend'>"
                 "<tr><th>metric</th><th>unit</th><th>direction</th><th>range</th><th>what it measures</th></tr>"
                 f"{rows}</table>"
                 "<p>↑ higher is better, ↓ lower is better, →1 closer to 1 is better.</p>")
    return "".join(parts)


def _img_tag(name: str, pngs: Mapping[str, bytes], cls: str) -> str:
    data = base64.b64encode(pngs[name]).decode("ascii")
    return f"<img class='{cls}' alt='{_e(name)}' src='data:image/png;base64,{data}'>"


def _uncertainty_section(job: ExportJob, outputs: Sequence[dict[str, Any]], pngs: Mapping[str, bytes]) -> str:
    """What is invented: the mean estimate beside the map of where the samples disagree (with
    its scale), the numbers and the region table; or why there is no map."""
    u = job.uncertainty
    if u is None:
        return ""
    parts = ["<h2 id='uncertainty'>What is invented: where the samples disagree</h2>"]
    if not u.get("map"):
        parts.append(f"<p>No map: {_e(u.get('note') or 'fewer than two samples were exported.')}</p>")
        return "".join(parts)
    parts.append(
        f"<p>Each sample is one plausible face consistent with the low-resolution input. The map shows, per "
        f"pixel, the standard deviation over the {_e(u.get('samples'))} exported samples ([0, 1] units): "
        f"<b>bright = samples disagree = invented detail</b>; dark = the samples agree, so the input "
        f"constrains that detail. The mean estimate (left) is the model's most accurate single image; the "
        f"map says where even it is a guess.</p><div class='grid'>")
    for kind, cls in (("mean", "face"), ("uncertainty", "map")):
        o = next((x for x in outputs if x.get("kind") == kind), None)
        if o is not None:
            parts.append(f"<figure class='{cls}' data-file='{_e(o['file'])}'>{_img_tag(o['file'], pngs, cls)}"
                         f"<figcaption><b>{_e(o.get('caption') or o['file'])}</b><br>"
                         f"<span class='mono'>{_e(o['file'])}</span></figcaption></figure>")
    parts.append("</div>")
    M = _metrics()

    def H(key: str, what: str = "") -> str:  # "RMS error (mean estimate vs reference) ↓"
        m = M.METRICS[key]
        return f"{m.label} ({what}) {m.arrow}" if what else f"{m.label} {m.arrow}"

    def val(key: str, v: Any) -> Any:
        return None if v is None else M.format_value(key, v)

    facts = {"samples": u.get("samples"), "seeds": u.get("seeds"),
             H("mean_std", "whole frame"): val("mean_std", u.get("mean_std")),
             "threshold (std, [0, 1] units)": u.get("threshold"),
             H("share_above_threshold", "of the face box"):
                 val("share_above_threshold", u.get("share_above_threshold")),
             H("sample_rms_to_mean", "each sample"): val("sample_rms_to_mean", u.get("sample_rms_to_mean")),
             "why this threshold": u.get("threshold_reason")}
    hr = u.get("against_hr")
    if hr:
        facts.update({H("rms_error", "mean estimate vs reference"): val("rms_error", hr.get("rms_error")),
                      H("ratio", "RMS(error) / RMS(std); 1 = the std predicts the error"):
                          val("ratio", hr.get("ratio")),
                      H("spearman_patch", f"{hr.get('patch')}x{hr.get('patch')} patches, std vs error"):
                          val("spearman_patch", hr.get("spearman_patch"))})
    parts.append(_kv_table(facts))
    head = (f"<tr><th>region</th>{_metric_th('mean_std')}"
            f"<th title='{_e(M.METRICS['share_above_threshold'].line)}'>{_e(H('share_above_threshold'))}</th>")
    err = M.METRICS["rms_error"]
    head += (f"<th title='{_e(err.line)}'>{_e(err.label)} of the mean estimate {err.arrow}</th></tr>"
             if hr else "</tr>")
    rows = []
    for name, r in (u.get("regions") or {}).items():
        cells = (f"<td>{_e(M.format_value('mean_std', r.get('mean_std')))}</td>"
                 f"<td>{_e(M.format_value('share_above_threshold', r.get('share_above_threshold')))}</td>")
        if hr:
            cells += (f"<td>{_e(M.format_value('rms_error', (hr.get('regions') or {}).get(name, {}).get('rms_error')))}"
                      "</td>")
        rows.append(f"<tr class='region' data-region='{_e(name)}'><td>{_e(r.get('label', name))}</td>{cells}</tr>")
    parts.append(f"<h3>Regions of the face frame</h3><table id='regions'>{head}{''.join(rows)}</table>")
    return "".join(parts)


def build_html_report(job: ExportJob, outputs: Sequence[dict[str, Any]], pngs: Mapping[str, bytes],
                      hashes: Mapping[str, str], created_utc: Optional[str] = None) -> str:
    """A self-contained HTML report (no external resources).

    ``outputs``: per image, its ``file`` name and facts; ``pngs``: file name -> the PNG bytes
    written (embedded as base64); ``hashes``: file name -> sha256 of every other output file.
    Every hash is listed in a table whose rows carry ``data-file`` / ``data-sha256``.
    """
    created = created_utc or utc_now_iso()
    M = _metrics()
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{_e(job.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(job.title)}</h1><div>Created {_e(created)} by SDE-SR Studio</div>",
             f"<div class='banner'><b>Contains generated images.</b> {_e(GENERATED_NOTICE)} "
             f"Images tagged <span class='tag gen'>GENERATED</span> were produced by a diffusion "
             f"model from the low-resolution input; they are plausible faces, not recovered "
             f"detail.</div>"]

    parts.append("<h2>Input</h2>")
    # facts of the frame that the input already records (fps, frame count) are not repeated
    frame = {"frame " + k: v for k, v in job.frame.items()
             if v is None or v not in (job.input.get(k), job.input.get("frame_" + k))}
    parts.append(_kv_table({**dict(job.input), **frame}))
    if job.face:
        parts.append("<h3>Face</h3>" + _kv_table(job.face))

    parts.append("<h2>Images</h2><div class='grid'>")
    for o in outputs:
        if o.get("kind") == "uncertainty":
            continue  # in its own section, at its own size
        name = o["file"]
        data = base64.b64encode(pngs[name]).decode("ascii")
        kind = o.get("kind", "")
        if o.get("generated"):
            tag = "<span class='tag gen'>GENERATED</span>"
            if kind == "mean":
                tag += " <span class='tag interp'>ESTIMATE, NOT A SAMPLE</span>"
            if o.get("warning"):  # a sample that does not reproduce its LR input
                tag += " <span class='tag warn'>DOES NOT MATCH INPUT</span>"
        elif kind == "bicubic":
            tag = "<span class='tag interp'>INTERPOLATED</span>"
        else:
            tag = "<span class='tag real'>FROM INPUT</span>"
        facts = {k: v for k, v in o.items()
                 if k not in ("file", "sha256", "generated", "kind", "caption", "sampler", "sample")}
        fact_html = "<br>".join(_e(M.format_metric(k, v)) if k in M.METRICS else f"{_e(k)}: {_e(_fmt(v))}"
                                for k, v in facts.items())
        parts.append(
            f"<figure data-file='{_e(name)}'><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{tag} <b>{_e(o.get('caption') or name)}</b><br>{fact_html}"
            f"<br><span class='mono'>{_e(name)}</span></figcaption></figure>")
    parts.append("</div>")
    parts.append(_metrics_section(outputs, job.uncertainty))

    parts.append(_uncertainty_section(job, outputs, pngs))

    parts.append("<h2>Sampler settings</h2>" + _kv_table(job.sampler))
    seeds = [(o.get("caption") or o["file"], o["seed"]) for o in outputs if o.get("seed") is not None]
    if seeds:
        parts.append("<h3>Seeds</h3><table><tr><th>image</th><th>seed</th></tr>" + "".join(
            f"<tr><td>{_e(c)}</td><td>{_e(s)}</td></tr>" for c, s in seeds) + "</table>")
    reruns = [o for o in outputs if o.get("sampler")]
    for o in reruns:
        parts.append(f"<h3>Settings of {_e(o.get('caption') or o['file'])}</h3>" + _kv_table(o["sampler"]))
    parts.append("<h2>Model</h2>" + _kv_table(job.model))
    if job.classifier:
        parts.append("<h3>Attribute classifier</h3>" + _kv_table(job.classifier))
    parts.append("<h2>Device and timings</h2>" + _kv_table({"device": job.device, **job.timings}))

    parts.append("<h2>Gallery candidates</h2>")
    parts.append(f"<div class='banner'><b>Candidates, not identifications.</b> {_e(CANDIDATE_NOTICE)}"
                 f" A generated image can resemble someone it is not.</div>")
    c = job.candidates
    if not c:
        parts.append("<p>No gallery search was run for this export.</p>")
    else:
        parts.append(_kv_table({k: c.get(k) for k in ("gallery", "embedder", "top_k", "stability")}))
        parts.append(_calibration_words(c.get("calibration")))
        for label, cands in (c.get("per_sample") or {}).items():
            parts.append(f"<h3>{_e(label)}</h3>" + _cand_table(cands))
        if c.get("consensus"):
            parts.append("<h3>Consensus over all samples</h3>" + _cand_table(
                c["consensus"], ("rank1_frequency", "in_top_k", "ranks"), "mean cosine over samples"))
        m = c.get("mean_estimate")
        if m:
            parts.append("<h3>Mean estimate (matched on its own: an estimate, not a sample)</h3>"
                         + _cand_table(m.get("candidates") or []))
        if c.get("bicubic") is not None:
            parts.append("<h3>Bicubic baseline</h3>" + _cand_table(c["bicubic"]))

    if job.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in job.notes) + "</ul>")

    parts.append("<h2>Output files and SHA-256</h2><table id='hashes'><tr><th>file</th><th>sha256</th></tr>")
    for name in sorted(hashes):
        parts.append(f"<tr class='hash' data-file='{_e(name)}' data-sha256='{_e(hashes[name])}'>"
                     f"<td class='mono'>{_e(name)}</td><td class='mono'>{_e(hashes[name])}</td></tr>")
    parts.append(f"</table><p>The hash of this report itself is in <code>{SUMS_NAME}</code>.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def _normal_permissions(folder: Path) -> None:
    """Temp files and folders are private (0600 / 0700); give the export the usual modes."""
    mask = os.umask(0)
    os.umask(mask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def export_run(job: ExportJob, parent: os.PathLike | str, *, folder_name: str = "sdesr_run",
               forbidden: Iterable[os.PathLike | str] = ()) -> ExportResult:
    """Write the export into a new folder ``parent/folder_name`` (suffixed if it exists).

    Raises :class:`ExportError` for a forbidden or impossible destination. On any error the
    partial folder is removed; the result appears complete or not at all.
    """
    parent_p = check_export_parent(parent, forbidden)
    if not job.images:
        raise ExportError("There is nothing to export.")
    try:
        parent_p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"The folder {parent_p} cannot be created ({e.strerror or e}).") from None
    stem = safe_stem(folder_name)
    final = parent_p / stem
    n = 2
    while final.exists():
        final = parent_p / f"{stem}-{n}"
        n += 1
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=parent_p))
    except OSError as e:
        raise ExportError(f"The folder {parent_p} is not writable ({e.strerror or e}).") from None
    try:
        used: set[str] = set()
        outputs: list[dict[str, Any]] = []
        pngs: dict[str, bytes] = {}
        hashes: dict[str, str] = {}
        for img in job.images:
            name = _file_name(img, used)
            digest = atomic_save_png(tmp / name, img.image, generated=bool(img.generated))
            data = (tmp / name).read_bytes()  # the report embeds the very bytes written
            pngs[name], hashes[name] = data, digest
            entry = {"file": name, "sha256": digest, "kind": img.kind, "generated": bool(img.generated),
                     "caption": img.caption,
                     "size": [int(img.image.shape[1]), int(img.image.shape[0])]}
            entry.update(img.info)
            outputs.append(entry)
        record = build_run_record(job, outputs)
        record_bytes = to_json(record).encode("utf-8")
        atomic_write_bytes(tmp / RECORD_NAME, record_bytes)
        hashes[RECORD_NAME] = sha256_bytes(record_bytes)
        page = build_html_report(job, outputs, pngs, hashes, created_utc=record.get("created_utc"))
        page_bytes = page.encode("utf-8")
        atomic_write_bytes(tmp / REPORT_NAME, page_bytes)
        hashes[REPORT_NAME] = sha256_bytes(page_bytes)
        sums = "".join(f"{hashes[k]}  {k}\n" for k in sorted(hashes))
        atomic_write_bytes(tmp / SUMS_NAME, sums.encode("utf-8"))
        _normal_permissions(tmp)
        os.rename(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ExportError(f"The export to {parent_p} failed ({e.strerror or e}); "
                              "nothing was left behind.") from None
        raise
    return ExportResult(final, dict(hashes), record)


def read_sha256sums(folder: os.PathLike | str) -> dict[str, str]:
    """``SHA256SUMS`` of an export as {file name: sha256}."""
    out: dict[str, str] = {}
    for line in (Path(folder) / SUMS_NAME).read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            out[name.strip().lstrip("*")] = digest
    return out


def verify_export(folder: os.PathLike | str) -> list[str]:
    """Names of files whose content no longer matches ``SHA256SUMS`` (or that are missing)."""
    bad = []
    for name, digest in read_sha256sums(folder).items():
        p = Path(folder) / name
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(name)
    return bad
