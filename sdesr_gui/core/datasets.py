"""Training data: prepare a folder of face frames from photos, and read it as a torch Dataset.

:func:`prepare_dataset` turns photos into the canonical 128x128 face frame:

* CelebA "aligned" photos (exactly 178x218) use the fixed crop box
  (:func:`faces.celeba_aligned_to_frame`);
* any other photo: MTCNN detection, the largest confident face, similarity-aligned onto the
  5-point template (:func:`faces.align_face`).

The output folder holds ``images/<name>.png``, ``manifest.csv`` and ``prepare_report.json``.
Sources are evidence: nothing is written into them, and an output folder inside a source is
refused. The split into train/validation is by identity (a person is never in both).

:class:`FaceDataset` loads a prepared folder into memory (uint8) and yields
``dict(hr, lr, y_up, attrs, index)`` with the LR made by :func:`faces.degrade` on the full frame
(or by an SR3+-style realistic degradation) and optional random crops / flips.

Qt-free.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import faces
from .degradations import DegradationMix
from .provenance import atomic_save_png, atomic_write_text, is_inside, sha256_file, utc_now_iso, \
    write_json_atomic
from .video import SUPPORTED_STILL_EXTENSIONS, InputError, load_still
from .errors import is_cancelled

__all__ = [
    "ATTRIBUTES",
    "MANIFEST_COLUMNS",
    "CELEBA_ALIGNED_SIZE",
    "TEACHER_THRESHOLDS",
    "PrepareReport",
    "prepare_dataset",
    "read_manifest",
    "split_of",
    "FaceDataset",
]

PathLike = Union[str, os.PathLike]
ProgressFn = Callable[[int, int, dict], None]

#: Attribute columns, in the order of the classifier's logits.
ATTRIBUTES: tuple[str, ...] = ("male", "beard", "eyeglasses")
#: Columns of ``manifest.csv`` (the first nine are the contract; the rest are extra details).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "file", "identity", "split", "source_file", "method", "male", "beard", "eyeglasses",
    "attr_source", "det_prob", "scale", "source_sha256",
)
#: (width, height) of a CelebA "img_align_celeba" photo.
CELEBA_ALIGNED_SIZE: tuple[int, int] = (178, 218)
#: Thresholds on the teacher probabilities (the README: below 0.5 suits male and beard).
TEACHER_THRESHOLDS: dict[str, float] = {"male": 0.4, "beard": 0.35, "eyeglasses": 0.5}

_MANIFEST = "manifest.csv"
_REPORT = "prepare_report.json"
_IMAGES = "images"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
_check_cancel = is_cancelled


def split_of(identity: str, val_fraction: float) -> str:
    """Deterministic split of an identity: ``"val"`` if sha256(identity) / 2^256 < val_fraction."""
    h = hashlib.sha256(str(identity).encode("utf-8")).digest()
    frac = int.from_bytes(h[:8], "big") / 2.0 ** 64
    return "val" if frac < float(val_fraction) else "train"


def _list_source(src: Path) -> list[tuple[Path, Path]]:
    """(file, root) pairs of a source: a folder (recursive, sorted, hidden skipped) or a file."""
    if src.is_file():
        return [(src, src.parent)]
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in SUPPORTED_STILL_EXTENSIONS:
                out.append((Path(dirpath) / name, src))
    out.sort(key=lambda fr: fr[0].relative_to(fr[1]).as_posix())
    return out


def _safe_name(text: str) -> str:
    keep = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in text)
    return keep.strip("._") or "image"


def _output_names(items: Sequence[tuple[Path, Path]]) -> list[str]:
    """Unique output stems: the file stem, else the relative path, else + a short hash."""
    stems = [_safe_name(f.stem) for f, _ in items]
    count: dict[str, int] = defaultdict(int)
    for s in stems:
        count[s] += 1
    names = []
    for (f, root), s in zip(items, stems):
        if count[s] > 1:
            rel = f.relative_to(root).with_suffix("")
            s = _safe_name("__".join(rel.parts))
        names.append(s)
    count2: dict[str, int] = defaultdict(int)
    for s in names:
        count2[s] += 1
    out = []
    for (f, _), s in zip(items, names):
        if count2[s] > 1:
            s = f"{s}__{hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:8]}"
        out.append(s)
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    for row in csv.DictReader(fh)]
    except FileNotFoundError:
        raise InputError(f"The table '{path.name}' does not exist.", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"The table '{path.name}' could not be read ({exc}).", path) from None


def _flag(v: str) -> Optional[int]:
    v = (v or "").strip()
    if v in ("1", "1.0", "true", "True"):
        return 1
    if v in ("0", "0.0", "-1", "false", "False"):
        return 0
    return None


def _load_attribute_tables(paths: Iterable[PathLike]) -> tuple[dict, dict]:
    """Official and teacher attribute tables keyed by file name.

    official: name -> {attr: 0/1}; teacher: name -> {attr: probability}.
    """
    official: dict[str, dict[str, int]] = {}
    teacher: dict[str, dict[str, float]] = {}
    for p in paths:
        p = Path(p)
        rows = _read_csv(p)
        if not rows:
            continue
        cols = set(rows[0])
        if "file" not in cols:
            raise InputError(f"The attribute table '{p.name}' has no 'file' column.", p)
        if "Male" in cols or "Eyeglasses" in cols or "No_Beard" in cols:
            for r in rows:
                d: dict[str, int] = {}
                m = _flag(r.get("Male", ""))
                if m is not None:
                    d["male"] = m
                e = _flag(r.get("Eyeglasses", ""))
                if e is not None:
                    d["eyeglasses"] = e
                nb, go, mu = (_flag(r.get(k, "")) for k in ("No_Beard", "Goatee", "Mustache"))
                if go == 1 or mu == 1 or nb == 0:
                    d["beard"] = 1
                elif nb == 1 and go != 1 and mu != 1:
                    d["beard"] = 0
                official[Path(r["file"]).name] = d
        elif "p_male" in cols or "p_beard" in cols or "p_eyeglasses" in cols:
            for r in rows:
                d2: dict[str, float] = {}
                for a in ATTRIBUTES:
                    v = r.get(f"p_{a}", "")
                    try:
                        f = float(v)
                    except ValueError:
                        continue
                    if math.isfinite(f):
                        d2[a] = f
                teacher[Path(r["file"]).name] = d2
        else:
            raise InputError(f"The attribute table '{p.name}' has neither CelebA columns "
                             "(Male, Eyeglasses, No_Beard, ...) nor teacher columns "
                             "(p_male, p_beard, p_eyeglasses).", p)
    return official, teacher


def _assign_attributes(rows: list[dict[str, Any]], official: dict, teacher: dict) -> dict:
    """Fill male/beard/eyeglasses/attr_source of ``rows`` in place; return coverage counts.

    Per attribute: the official label of the file; else (male only) the majority of the
    official labels of the same identity; else the teacher probability thresholded.
    """
    # identity-level gender from official labels (a person's gender is constant in CelebA)
    votes: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        o = official.get(Path(r["source_file"]).name, {})
        if "male" in o and not r["identity"].startswith("unknown/"):
            votes[r["identity"]].append(o["male"])
    id_male = {k: int(sum(v) * 2 > len(v)) for k, v in votes.items() if sum(v) * 2 != len(v)}

    coverage = {a: defaultdict(int) for a in ATTRIBUTES}
    for r in rows:
        name = Path(r["source_file"]).name
        o, t = official.get(name, {}), teacher.get(name, {})
        used = []
        for a in ATTRIBUTES:
            val, src = None, ""
            if a in o:
                val, src = o[a], "official"
            elif a == "male" and r["identity"] in id_male:
                val, src = id_male[r["identity"]], "identity"
            elif a in t:
                val, src = int(t[a] >= TEACHER_THRESHOLDS[a]), "teacher"
            r[a] = "" if val is None else str(val)
            coverage[a][src or "unknown"] += 1
            if src and src not in used:
                used.append(src)
        r["attr_source"] = "+".join(used)
    return {a: dict(v) for a, v in coverage.items()}


def read_manifest(dataset_dir: PathLike) -> list[dict[str, str]]:
    """Rows of ``<dataset_dir>/manifest.csv`` (raises :class:`InputError` if missing)."""
    d = Path(dataset_dir)
    path = d / _MANIFEST
    if not path.is_file():
        raise InputError(f"The folder '{d.name or d}' is not a prepared dataset "
                         f"(it has no {_MANIFEST}); run prepare first.", d)
    rows = _read_csv(path)
    for r in rows:
        if "file" not in r or "split" not in r:
            raise InputError(f"The manifest of '{d.name}' lacks the file/split columns.", path)
    return rows


def _write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["file"]):
        w.writerow({k: r.get(k, "") for k in MANIFEST_COLUMNS})
    atomic_write_text(out / _MANIFEST, buf.getvalue())


# ------------------------------------------------------------------------------------------
# prepare
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did (also written to ``prepare_report.json``)."""

    out: str
    sources: list[str]
    total: int = 0
    prepared: int = 0
    reused: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    methods: dict[str, int] = dataclasses.field(default_factory=dict)
    splits: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    attributes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    attribute_positives: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.1
    cancelled: bool = False
    complete: bool = False
    seconds: float = 0.0
    created_utc: str = dataclasses.field(default_factory=utc_now_iso)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Images in the dataset (newly prepared + reused)."""
        return self.prepared + self.reused

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        tr, va = self.splits.get("train", {}), self.splits.get("val", {})
        lines = [
            f"{self.ok} of {self.total} images in the dataset ({self.prepared} new, {self.reused} "
            f"already there), {self.failed} skipped" + (" - CANCELLED" if self.cancelled else ""),
            f"train: {tr.get('images', 0)} images of {tr.get('identities', 0)} identities; "
            f"val: {va.get('images', 0)} images of {va.get('identities', 0)} identities",
        ]
        for a in ATTRIBUTES:
            cov = self.attributes.get(a, {})
            lab = sum(v for k, v in cov.items() if k != "unknown")
            lines.append(f"{a}: {lab} labelled ({', '.join(f'{k} {v}' for k, v in sorted(cov.items()))})")
        return "\n".join(lines)


def _frame_from_photo(path: Path, min_face: float, min_prob: float
                      ) -> tuple[np.ndarray, str, float, float]:
    """Load one photo and make its 128 frame: (frame, method, det_prob, scale)."""
    rgb = load_still(path)
    h, w = rgb.shape[:2]
    if (w, h) == CELEBA_ALIGNED_SIZE:
        frame = np.asarray(faces.celeba_aligned_to_frame(Image.fromarray(rgb)), dtype=np.uint8)
        box = faces.CELEBA_ALIGNED_BOX
        return frame, "celeba_aligned", float("nan"), faces.FRAME_SIZE / (box[2] - box[0])
    found = faces.detect_faces(rgb, min_face=min_face, min_prob=min_prob)
    face = faces.largest_face(found)
    if face is None:
        raise LookupError("no face found")
    frame, m = faces.align_face(rgb, face.landmarks)
    scale = float(math.sqrt(abs(np.linalg.det(m[:, :2]))))
    return frame, "mtcnn", face.prob, scale


def prepare_dataset(
    sources: Sequence[PathLike],
    out: PathLike,
    *,
    identities_csv: Optional[PathLike] = None,
    attributes_csvs: Sequence[PathLike] = (),
    val_fraction: float = 0.1,
    min_face: float = 20,
    min_prob: float = 0.9,
    progress: Optional[ProgressFn] = None,
    cancel=None,
    log: Optional[Callable[[str], None]] = None,
    checkpoint_every: int = 500,
) -> PrepareReport:
    """Make a training folder of canonical 128x128 face frames from photos.

    Args:
        sources: folders (searched recursively) and/or image files.
        out: output folder (created); must not lie inside a source.
        identities_csv: ``file,identity[,source]`` table (file matched by name); without an
            entry the identity is the image's sub-folder (relative to its source folder),
            and an image directly in a source folder gets its own identity ``unknown/<name>``.
        attributes_csvs: CelebA-style official tables and/or teacher probability tables.
        val_fraction: share of identities in the validation split (by sha256 of the identity).
        min_face, min_prob: MTCNN smallest face side and lowest probability accepted.
        progress: ``progress(done, total, info)`` after every image.
        cancel: callable (or Event) polled before every image; on cancel the manifest of what
            is done so far is written and the report says ``cancelled``.
        checkpoint_every: also write the manifest every this many images (crash safety).

    Re-running skips images whose PNG and manifest row already exist (idempotent).
    Raises :class:`InputError` for a missing source or an output folder inside a source.
    """
    start = time.perf_counter()
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError("The validation fraction must be at least 0 and below 1.")
    src_paths = [Path(s).expanduser() for s in sources]
    if not src_paths:
        raise InputError("No source folders or images were given.")
    out_dir = Path(out).expanduser()
    for s in src_paths:
        if not s.exists():
            raise InputError(f"The source '{s}' does not exist.", s)
        folder = s if s.is_dir() else s.parent
        if is_inside(out_dir, folder):
            raise InputError(f"The output folder '{out_dir}' is inside the source folder "
                             f"'{folder}'; sources are evidence, so choose an output folder "
                             "elsewhere.", out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The output path '{out_dir}' exists and is not a folder.", out_dir)

    items: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for s in src_paths:
        for f, root in _list_source(s):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                items.append((f, root))
    if not items:
        raise InputError("No image files were found in the given sources.")
    names = _output_names(items)

    ident_map: dict[str, str] = {}
    if identities_csv is not None:
        for r in _read_csv(Path(identities_csv)):
            if r.get("file") and r.get("identity", "") != "":
                ident_map[Path(r["file"]).name] = r["identity"]
    official, teacher = _load_attribute_tables(attributes_csvs)

    img_dir = out_dir / _IMAGES
    img_dir.mkdir(parents=True, exist_ok=True)
    previous: dict[str, dict[str, str]] = {}
    if (out_dir / _MANIFEST).is_file():
        try:
            previous = {r["file"]: r for r in read_manifest(out_dir)}
        except InputError:
            previous = {}

    report = PrepareReport(out=str(out_dir), sources=[str(s) for s in src_paths],
                           total=len(items), val_fraction=float(val_fraction),
                           settings={"min_face": min_face, "min_prob": min_prob,
                                     "identities_csv": str(identities_csv) if identities_csv else None,
                                     "attributes_csvs": [str(p) for p in attributes_csvs],
                                     "frame_size": faces.FRAME_SIZE,
                                     "template_landmarks": faces.TEMPLATE_LANDMARKS.tolist()})
    rows: list[dict[str, Any]] = []
    methods: dict[str, int] = defaultdict(int)

    def identity_of(f: Path, root: Path) -> str:
        if f.name in ident_map:
            return ident_map[f.name]
        rel = f.relative_to(root)
        if len(rel.parts) > 1:
            return rel.parts[-2]
        return f"unknown/{f.name}"

    def finish(cancelled: bool) -> PrepareReport:
        for r in rows:
            r["split"] = split_of(r["identity"], val_fraction)
        report.attributes = _assign_attributes(rows, official, teacher)
        _write_manifest(out_dir, rows)
        report.cancelled = cancelled
        report.complete = not cancelled
        report.methods = dict(methods)
        splits: dict[str, dict[str, int]] = {}
        for sp in ("train", "val"):
            rs = [r for r in rows if r["split"] == sp]
            splits[sp] = {"images": len(rs), "identities": len({r["identity"] for r in rs})}
        report.splits = splits
        report.attribute_positives = {
            a: {sp: sum(1 for r in rows if r["split"] == sp and r[a] == "1") for sp in ("train", "val")}
            for a in ATTRIBUTES}
        report.seconds = round(time.perf_counter() - start, 2)
        write_json_atomic(out_dir / _REPORT, report.to_dict())
        return report

    for i, ((f, root), name) in enumerate(zip(items, names)):
        if _check_cancel(cancel):
            if log:
                log("Preparation cancelled; the manifest lists the images done so far.")
            return finish(True)
        file = f"{_IMAGES}/{name}.png"
        row: dict[str, Any] = {"file": file, "identity": identity_of(f, root),
                               "source_file": os.path.abspath(f)}
        prev = previous.get(file)
        status = "prepared"
        if prev is not None and prev.get("source_file") == row["source_file"] and (out_dir / file).is_file():
            for k in ("method", "det_prob", "scale", "source_sha256"):
                row[k] = prev.get(k, "")
            report.reused += 1
            status = "reused"
        else:
            try:
                frame, method, prob, scale = _frame_from_photo(f, min_face, min_prob)
                atomic_save_png(out_dir / file, frame)
                row.update(method=method, det_prob="" if not math.isfinite(prob) else f"{prob:.5f}",
                           scale=f"{scale:.4f}", source_sha256=sha256_file(f))
                report.prepared += 1
            except InputError as exc:
                report.failed += 1
                report.failures.append({"source_file": str(f), "reason": str(exc)})
                status = "failed"
            except LookupError:
                report.failed += 1
                report.failures.append({"source_file": str(f),
                                        "reason": f"no face with probability >= {min_prob} found"})
                status = "failed"
        if status != "failed":
            methods[row["method"]] += 1
            rows.append(row)
        if progress is not None:
            progress(i + 1, len(items), {"file": str(f), "status": status,
                                         "prepared": report.prepared, "reused": report.reused,
                                         "failed": report.failed})
        if checkpoint_every and (i + 1) % checkpoint_every == 0 and i + 1 < len(items):
            for r in rows:
                r["split"] = split_of(r["identity"], val_fraction)
            _assign_attributes(rows, official, teacher)
            _write_manifest(out_dir, rows)
    return finish(False)


#: the largest zoom and colour jitter a dataset accepts (beyond them a face leaves the canonical
#: frame, or its colours stop looking like a photograph)
MAX_SCALE_JITTER = 0.25
MAX_COLOR_JITTER = 0.5


def check_jitter(scale_jitter: float, color_jitter: float) -> None:
    """ValueError unless both jitters are within [0, their maximum]."""
    if not 0.0 <= float(scale_jitter) <= MAX_SCALE_JITTER:
        raise ValueError(f"scale_jitter must be between 0 and {MAX_SCALE_JITTER}")
    if not 0.0 <= float(color_jitter) <= MAX_COLOR_JITTER:
        raise ValueError(f"color_jitter must be between 0 and {MAX_COLOR_JITTER}")


def _shift_frames(hr: torch.Tensor, offsets: np.ndarray, pad: int) -> torch.Tensor:
    """Each frame ``hr[i]`` moved by ``offsets[i] = (dy, dx)`` pixels (|d| <= ``pad``), the
    uncovered border filled by reflection; same size as ``hr``."""
    size_y, size_x = hr.shape[-2:]
    padded = torch.nn.functional.pad(hr, (pad, pad, pad, pad), mode="reflect")
    return torch.stack([padded[i, :, pad - dy:pad - dy + size_y, pad - dx:pad - dx + size_x]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


def _zoom_frames(hr: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """Each frame ``hr[i]`` zoomed by ``factors[i]`` about the frame centre (> 1 enlarges the
    face), bicubic, the uncovered border filled by reflection, clamped to [0, 1]; same size."""
    n = hr.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=hr.dtype, device=hr.device)
    inv = torch.as_tensor(1.0 / np.asarray(factors, dtype=np.float64), dtype=hr.dtype, device=hr.device)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    grid = F.affine_grid(theta, list(hr.shape), align_corners=False)
    out = F.grid_sample(hr, grid, mode="bicubic", padding_mode="reflection", align_corners=False)
    return out.clamp_(0.0, 1.0)


def _jitter_colours(hr: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """Brightness, contrast and saturation of each frame scaled by ``factors[i] = (b, c, s)``
    (1 = unchanged): contrast about the frame's mean grey, saturation about each pixel's grey
    (ITU-R BT.601 luma), clamped to [0, 1]."""
    f = torch.as_tensor(np.asarray(factors, dtype=np.float32), dtype=hr.dtype, device=hr.device)
    b, c, s = (f[:, k].view(-1, 1, 1, 1) for k in range(3))
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=hr.dtype, device=hr.device).view(1, 3, 1, 1)
    x = hr * b
    mean_grey = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = mean_grey + (x - mean_grey) * c
    grey = (x * luma).sum(1, keepdim=True)
    x = grey + (x - grey) * s
    return x.clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------
# dataset
class FaceDataset(torch.utils.data.Dataset):
    """A prepared face folder in memory: HR frames, their LR inputs and attribute labels.

    Args:
        dataset_dir: folder written by :func:`prepare_dataset`.
        split: ``"train"``, ``"val"`` or ``"all"``.
        crop: side of a random square crop (offsets on the 8-pixel LR grid), ``None`` = full frame.
        flip: random horizontal flips.
        shift: random translations of the HR frame by up to ``shift`` pixels in x and y (each
            drawn uniformly from -shift..shift, reflect padding) before the LR is made: the
            8x8 LR grid then falls on other phases of the face, new LR/HR pairs from the same
            photo (the mean estimate overfits the 9,452 training faces without it).
        scale_jitter: random zoom of the HR frame about its centre by a factor drawn
            log-uniformly from [1 / (1 + s), 1 + s] (bicubic, reflection) before the LR is made;
            0 = none. Resampling softens the target a little, so keep it small (0.05-0.1).
        color_jitter: random brightness, contrast and saturation factors, each uniform in
            [1 - c, 1 + c], applied to the HR frame before the LR is made; 0 = none.
        degradation: ``"bicubic"`` (:func:`faces.degrade`) or ``"realistic"`` (footage-grade:
            a :class:`degradations.DegradationMix` draw per image, ``realistic`` sets the mix).
        lr_size: side of the LR (16 for the 8x model, 8 for the 16x one).
        seed: seed of the per-item randomness of ``__getitem__`` (with :meth:`set_epoch`).
        limit: keep only the first ``limit`` images (manifest order).
        max_scale: drop faces that were upscaled more than this when aligned (blurry HR).

    Items are dicts: ``hr`` [3, c, c] float in [0, 1], ``lr`` [3, 16, 16] on the uint8 grid
    (made from the FULL frame), ``y_up`` (= upsample(lr), cropped like ``hr``), ``attrs`` [3]
    (1 / 0, -1 unknown; order :data:`ATTRIBUTES`), ``index``.
    """

    def __init__(self, dataset_dir: PathLike, split: str = "train", *, crop: Optional[int] = None,
                 flip: bool = True, shift: int = 0, scale_jitter: float = 0.0, color_jitter: float = 0.0,
                 degradation: str = "bicubic", seed: int = 0,
                 limit: Optional[int] = None, max_scale: Optional[float] = None,
                 lr_size: int = faces.LR_SIZE,
                 realistic: Optional[DegradationMix] = None) -> None:
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}")
        if degradation not in ("bicubic", "realistic"):
            raise ValueError(f"degradation must be 'bicubic' or 'realistic', not {degradation!r}")
        self.dataset_dir = Path(dataset_dir)
        rows = read_manifest(self.dataset_dir)
        if split != "all":
            rows = [r for r in rows if r["split"] == split]
        if max_scale is not None:
            rows = [r for r in rows if not r.get("scale") or float(r["scale"]) <= max_scale]
        if limit is not None:
            rows = rows[: int(limit)]
        self.rows = rows
        self.split = split
        size = faces.FRAME_SIZE
        if crop is not None:
            crop = int(crop)
            if not 0 < crop <= size:
                raise ValueError(f"crop must be between 1 and {size}")
        self.crop = crop
        self.flip = bool(flip)
        if not 0 <= int(shift) < size // 2:
            raise ValueError(f"shift must be between 0 and {size // 2 - 1} pixels")
        self.shift = int(shift)
        check_jitter(scale_jitter, color_jitter)
        self.scale_jitter = float(scale_jitter)
        self.color_jitter = float(color_jitter)
        self.degradation = degradation
        self.realistic = realistic or DegradationMix()
        self.seed = int(seed)
        self.lr_size = int(lr_size)
        self.epoch = 0
        self.images = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
        for i, r in enumerate(rows):
            path = self.dataset_dir / r["file"]
            img = load_still(path)
            if img.shape[:2] != (size, size):
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))
            self.images[i] = img
        attrs = np.full((len(rows), len(ATTRIBUTES)), -1.0, dtype=np.float32)
        for i, r in enumerate(rows):
            for j, a in enumerate(ATTRIBUTES):
                v = _flag(r.get(a, ""))
                if v is not None:
                    attrs[i, j] = v
        self.attrs = torch.from_numpy(attrs)
        self.identities = [r.get("identity", "") for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Change the randomness of ``__getitem__`` (like a DistributedSampler epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(idx)])
        b = self.batch([int(idx)], rng)
        return {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

    def hr_batch(self, indices: Sequence[int], device: Optional[torch.device] = None) -> torch.Tensor:
        """Full HR frames ``[B, 3, 128, 128]`` (no augmentation), made on ``device`` (CPU)."""
        arr = torch.from_numpy(self.images[np.asarray(indices, dtype=np.int64)])
        if device is not None:
            arr = arr.to(device)  # the uint8 frames travel: a quarter of the bytes of float
        return arr.permute(0, 3, 1, 2).float().div_(255.0)

    def batch(self, indices: Sequence[int], rng: Optional[np.random.Generator] = None,
              *, crop: Optional[int] = -1, flip: Optional[bool] = None,
              degradation: Optional[str] = None,
              device: Optional[torch.device] = None) -> dict[str, torch.Tensor]:
        """A collated batch for ``indices``; all randomness from ``rng``.

        ``rng=None`` means no augmentation: no flip, shift, zoom or colour jitter, centre crop, and
        ``"realistic"`` falls back to bicubic. ``crop``/``flip``/``degradation`` override the dataset's settings.
        ``device``: where the tensors are made (a GPU trainer makes the bicubic LR there; the
        realistic degradations run on the CPU, image by image, and their LR is moved).
        """
        crop = self.crop if crop == -1 else crop
        flip = self.flip if flip is None else flip
        degradation = self.degradation if degradation is None else degradation
        idx = np.asarray(indices, dtype=np.int64)
        n = len(idx)
        hr = self.hr_batch(idx, device)
        if flip and rng is not None:
            flips = rng.random(n) < 0.5
            if flips.any():
                sel = torch.from_numpy(np.flatnonzero(flips)).to(hr.device)
                hr[sel] = hr[sel].flip(-1)
        if self.shift and rng is not None:
            hr = _shift_frames(hr, rng.integers(-self.shift, self.shift + 1, size=(n, 2)), self.shift)
        # zoom and colour draws come after the flip and shift draws and only when asked for, so a
        # run without them replays its batches exactly as before they existed
        if self.scale_jitter and rng is not None:
            top = math.log1p(self.scale_jitter)
            hr = _zoom_frames(hr, np.exp(rng.uniform(-top, top, size=n)))
        if self.color_jitter and rng is not None:
            c = self.color_jitter
            hr = _jitter_colours(hr, rng.uniform(1.0 - c, 1.0 + c, size=(n, 3)))
        if degradation == "realistic" and rng is not None:
            hr_cpu = hr.cpu()
            lr = torch.stack([self.realistic.draw(rng).apply(hr_cpu[i], self.lr_size)
                              for i in range(n)]).to(hr.device)
        else:
            lr = faces.degrade(hr, self.lr_size)
        y_up = faces.upsample(lr, hr.shape[-1])
        size = hr.shape[-1]
        if crop is not None and crop < size:
            step = size // self.lr_size  # keep crops on the LR pixel grid, as at inference
            n_pos = (size - crop) // step + 1
            if rng is not None:
                oy = rng.integers(0, n_pos, size=n) * step
                ox = rng.integers(0, n_pos, size=n) * step
            else:
                oy = ox = np.full(n, ((size - crop) // 2) // step * step)
            hr = torch.stack([hr[i, :, oy[i]:oy[i] + crop, ox[i]:ox[i] + crop] for i in range(n)])
            y_up = torch.stack([y_up[i, :, oy[i]:oy[i] + crop, ox[i]:ox[i] + crop] for i in range(n)])
        return {"hr": hr.contiguous(), "lr": lr.contiguous(), "y_up": y_up.contiguous(),
                "attrs": self.attrs[torch.from_numpy(idx)].clone().to(hr.device),
                "index": torch.from_numpy(idx.copy())}

    def label_counts(self) -> dict[str, dict[str, int]]:
        """Per attribute: how many images are positive / negative / unknown."""
        out = {}
        for j, a in enumerate(ATTRIBUTES):
            col = self.attrs[:, j]
            out[a] = {"pos": int((col == 1).sum()), "neg": int((col == 0).sum()),
                      "unknown": int((col < 0).sum())}
        return out

    def fingerprint(self) -> str:
        """sha256 of the manifest rows in use (file + split), to notice a changed dataset."""
        h = hashlib.sha256()
        for r in self.rows:
            h.update(f"{r['file']}\t{r.get('identity', '')}\n".encode())
        return h.hexdigest()
