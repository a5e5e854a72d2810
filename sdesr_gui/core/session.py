"""The analyst's working state, Qt-free: one input, one selected face, one run and its images.

A :class:`Session` is the model behind the main window (and usable from scripts and tests
without Qt). It holds

* the current input (path, kind, size / fps / frame count) and the selected face with the
  frame it was taken from;
* the reference HR: one loaded by the user, else the aligned crop when it is genuine HR;
* the last run (:class:`RunSnapshot`: what its samples were produced from) and the images
  shown with it (:class:`ResultItem`: LR, bicubic, the run's mean estimate, the uncertainty map
  of its samples (K >= 2), reference and the samples with their seeds, metrics, favourites and
  re-run notes);
* the hashes of inputs computed so far (the run record needs them).

It does no heavy work itself (measuring PSNR / SSIM of a few 128x128 images when the reference
changes, or the std map of a few samples when they change, is the most: milliseconds): the sampler runs in a worker, which hands its :class:`SamplerOutcome` to
:meth:`Session.record_result`; an export is planned on the caller's thread with
:meth:`Session.plan_export`, written by :func:`write_export` (a worker's job: it may hash a long
video) and recorded with :meth:`Session.export_done`.

Views observe a session with :meth:`Session.subscribe`; the events and their arguments are

* ``"items"`` () -- the list of images changed (read :attr:`Session.items`);
* ``"item"`` (key) -- one image's metrics changed;
* ``"header"`` (text) -- the sentence that says what the images are changed;
* ``"added"`` (key) -- a re-run added a sample (a view may select it);
* ``"run"`` () -- a run was recorded or its reference changed (the samples should be matched
  against the gallery again).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np

from .errors import ExportError, InputError

__all__ = [
    "EVENTS",
    "ExportPlan",
    "ResultItem",
    "RunContext",
    "RunPlan",
    "RunSnapshot",
    "SamplerOutcome",
    "Session",
    "base_items",
    "forbidden_folders",
    "mismatch_warning",
    "uncertainty_item",
    "with_uncertainty",
    "write_export",
]

EVENTS = ("items", "item", "header", "added", "run")

#: the mean estimate's tile and export: the model's posterior-mean estimate, never a sample
MEAN_KEY = "mean"
MEAN_TITLE = "Mean estimate"
MEAN_NOTE = "an estimate, not a sample"
MEAN_CAPTION = "Mean estimate (the model's posterior-mean estimate; an estimate, not a sample)"

#: the uncertainty map's tile: where the run's current samples disagree (K >= 2; none for K = 1)
UNCERTAINTY_KEY = "uncertainty"
UNCERTAINTY_TITLE = "Uncertainty"

IDLE_HEADER = "Select a face and press Run. Generated samples are plausible faces, not recovered detail."
NO_FACE = ("Select a face first: open an image or video, then click a detected face or draw a box "
           "around one.")
NOTHING_TO_EXPORT = "There is nothing to export yet; run the sampler first."


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ResultItem:
    """One image shown with a run (and exported with it)."""

    key: str  # "lr", "bicubic", "reference", "s1", "s2", ...
    title: str
    image: np.ndarray  # HxWx3 uint8 (the LR is 16x16)
    kind: str  # lr | bicubic | mean | uncertainty | reference | sample (only "sample" items are samples)
    seed: Optional[int] = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    favourite: bool = False
    note: str = ""
    settings: Optional[dict[str, Any]] = None  # a re-run's own sampler settings
    generated: bool = False
    uncertainty: Any = None  # kind "uncertainty": its core.uncertainty.UncertaintyMap (image = the colour map)
    warning: str = ""  # a sample that does not reproduce its LR input: why (core.metrics.lr_mismatch)

    @property
    def warning_sentence(self) -> str:
        """The warning as one sentence naming the image (the tile's tooltip, the export); "" without one."""
        return f"{self.title} {self.warning}." if self.warning else ""


def mismatch_warning(sample_metrics: Mapping[str, float], mean_metrics: Mapping[str, float]) -> str:
    """The sentence a sample's tile, the header and the export show when the sample does not
    reproduce its LR input (its run's mean estimate, made from the same LR, is the yardstick);
    "" when it does."""
    from .metrics import lr_mismatch

    bad = lr_mismatch(sample_metrics, mean_metrics or {})
    return bad["text"] if bad else ""


def uncertainty_item(samples: list[ResultItem], scale: float = 1.0, near_mean: bool = False) -> Optional[ResultItem]:
    """The map of where ``samples`` disagree as an item (its image the cividis colour map,
    128x128, its ``uncertainty`` the numbers); None below two samples: no map is claimed.
    ``scale``: the model's calibration factor (``core.uncertainty.run_scale``); ``near_mean``:
    the samples started from the mean estimate (its note then says what the map is not)."""
    from .uncertainty import CAPTION, DEFAULT_VMAX, NEAR_MEAN_NOTE, colorize, uncertainty_map

    if len(samples) < 2:
        return None
    umap = uncertainty_map([it.image for it in samples], scale=scale)
    return ResultItem(UNCERTAINTY_KEY, UNCERTAINTY_TITLE, colorize(umap.std, DEFAULT_VMAX), "uncertainty",
                      note=f"std over {umap.samples} samples"
                      + (f" × {umap.scale:g} (the model's calibration factor)" if umap.scale != 1.0 else "")
                      + f": {CAPTION}" + (f" Here {NEAR_MEAN_NOTE}." if near_mean else ""), uncertainty=umap)


def with_uncertainty(items: list[ResultItem], scale: float = 1.0, near_mean: bool = False) -> list[ResultItem]:
    """``items`` with the map of their samples in place of any older one, right after the mean
    estimate (or the bicubic); unchanged but for a removed map when there are fewer than two."""
    items = [it for it in items if it.kind != "uncertainty"]
    u = uncertainty_item([it for it in items if it.kind == "sample"], scale, near_mean)
    if u is not None:
        after = [i for i, it in enumerate(items) if it.kind in ("lr", "bicubic", "mean")]
        items.insert(after[-1] + 1 if after else 0, u)
    return items


@dataclasses.dataclass
class SamplerOutcome:
    """What one sampler run delivers (the GUI's worker makes it)."""

    samples: list  # uint8 128x128x3 per sample
    seeds: list
    bicubic: np.ndarray
    metrics: list  # per sample: consistency (+ psnr, ssim when a reference is known)
    bicubic_metrics: dict
    settings: dict  # as recorded (h resolved, seeds listed)
    nfe: int
    seconds: float
    load_seconds: float
    device: str
    tag: Any = None
    mean: Optional[np.ndarray] = None  # uint8 128x128x3: the run's mean estimate (not a sample)
    mean_metrics: dict = dataclasses.field(default_factory=dict)  # consistency (+ psnr, ssim), like bicubic
    model: dict = dataclasses.field(default_factory=dict)  # the score model that ran (its model_info)
    choice: dict = dataclasses.field(default_factory=dict)  # the automatic clean / footage verdict, if any


@dataclasses.dataclass
class RunContext:
    """The input a new run is made from, as it was when the run started."""

    input_path: Optional[Path] = None
    input_kind: str = ""
    frame: dict = dataclasses.field(default_factory=dict)
    reference: Optional[np.ndarray] = None
    reference_loaded: bool = False
    source_info: dict = dataclasses.field(default_factory=dict)  # size, fps, frame count

    def __post_init__(self) -> None:
        if self.input_path is not None:
            self.input_path = Path(self.input_path)

    @classmethod
    def of(cls, ctx: Union["RunContext", Mapping[str, Any], None]) -> "RunContext":
        if ctx is None:
            return cls()
        if isinstance(ctx, RunContext):
            return ctx
        return cls(**{f.name: ctx[f.name] for f in dataclasses.fields(cls) if ctx.get(f.name) is not None})


@dataclasses.dataclass
class RunSnapshot:
    """What a set of samples was produced from (the selection may change afterwards)."""

    selection: Any  # core.selection.FaceSelection
    input_path: Optional[Path]
    input_kind: str
    frame: dict
    settings: dict
    model: dict
    classifier: Optional[dict]
    device: str
    timings: dict
    bicubic: np.ndarray
    bicubic_metrics: dict
    reference: Optional[np.ndarray] = None  # the reference HR the metrics refer to
    reference_loaded: bool = False  # loaded by the user (else the aligned crop itself)
    source_info: dict = dataclasses.field(default_factory=dict)  # size, fps, frame count of the input
    mean: Optional[np.ndarray] = None  # the run's mean estimate (kept across re-runs of one sample)
    mean_metrics: dict = dataclasses.field(default_factory=dict)
    origin: Any = None  # the selection the analyst ran on (``selection`` may be its rescaled copy)

    def ran_on(self, sel) -> bool:
        """Whether ``sel`` (the session's current selection) is the one these samples were made from."""
        return sel is (self.origin if self.origin is not None else self.selection)


@dataclasses.dataclass
class RunPlan:
    """What the sampler is asked to do: a new run on the selected face, or a re-run of a sample."""

    selection: Any
    reference: Optional[np.ndarray]
    context: Optional[RunContext]  # None for a re-run (its run's context stays)
    seed: Optional[int] = None  # a re-run's seed (one sample)
    tag: Any = None  # ("rerun", key) for a re-run
    origin: Any = None  # the session's selection this plan was made from (at_scale makes a new one)

    @property
    def lr(self) -> np.ndarray:
        return self.selection.lr

    def at_scale(self, scale: int, why: str = "") -> "RunPlan":
        """This plan for the ``scale`` model: a new run's selection gets that model's LR; a
        re-run must keep its run's magnification (InputError otherwise)."""
        from .selection import at_scale

        if self.tag is not None and self.selection.scale != int(scale):
            raise InputError(f"These samples were made by the {self.selection.scale}× model; re-run them with "
                             f"that model, or start a new run.")
        return dataclasses.replace(self, selection=at_scale(self.selection, scale, why),
                                   origin=self.origin if self.origin is not None else self.selection)

    def apply(self, settings) -> None:
        """Make ``settings`` (a ``SamplerSettings``) re-run the sample: its seed, one sample."""
        if self.seed is not None:
            settings.seed, settings.samples = int(self.seed), 1


@dataclasses.dataclass
class ExportPlan:
    """An export, snapshotted on the caller's thread; :func:`write_export` writes it."""

    job: Any  # core.report.ExportJob
    folder: Path
    name: str
    forbidden: list[Path]
    keys: list[str]
    input_key: Optional[str] = None  # resolved input path whose hash the export needs


def forbidden_folders(input_path: Optional[Path], gallery: Optional[Path]) -> list[Path]:
    """Folders an export must not go into: the input's folder and the gallery folder."""
    out = []
    if input_path is not None:
        out.append(Path(input_path).expanduser().resolve().parent)
    if gallery is not None:
        out.append(Path(gallery).expanduser().resolve())
    return out


def base_items(sel, bicubic_metrics: Optional[dict] = None, reference: Optional[np.ndarray] = None,
               reference_loaded: bool = False, mean: Optional[np.ndarray] = None,
               mean_metrics: Optional[dict] = None) -> list[ResultItem]:
    """The images every view of a face starts with: LR, bicubic, the run's mean estimate (when
    the run has one) and (when known) the reference."""
    if sel is None:
        return []
    n = int(sel.lr.shape[0])
    items = [ResultItem("lr", "LR input (nearest)", sel.lr, "lr", note=f"{n}×{n}, shown ×{128 // n}"),
             ResultItem("bicubic", "Bicubic", sel.bicubic, "bicubic", metrics=dict(bicubic_metrics or {}))]
    if mean is not None:
        items.append(ResultItem(MEAN_KEY, MEAN_TITLE, mean, "mean", metrics=dict(mean_metrics or {}),
                                note=MEAN_NOTE, generated=True))
    if reference is not None:
        items.append(ResultItem("reference", "Reference HR", reference, "reference",
                                note="loaded" if reference_loaded else "from the input"))
    return items


def _path_key(path) -> str:
    return str(Path(path).resolve())


def write_export(plan: ExportPlan):
    """Write ``plan`` (hashing the input first if that is still needed); slow: run it in a worker.

    Returns the ``core.report.ExportResult``; raises :class:`ExportError` (one sentence) for a
    refused or impossible destination, leaving nothing behind.
    """
    from .provenance import sha256_file
    from .report import export_run

    job = plan.job
    if job.input and not job.input.get("sha256"):
        job.input["sha256"] = sha256_file(job.input["path"])
    return export_run(job, plan.folder, folder_name=plan.name, forbidden=plan.forbidden)


# ------------------------------------------------------------------------------------------
# the session
# ------------------------------------------------------------------------------------------
class Session:
    """The state of one analyst's work; see the module docstring for the events."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable]] = {e: [] for e in EVENTS}
        self.input_path: Optional[Path] = None
        self.input_kind: str = ""
        self.source_info: dict = {}
        self.selection = None  # core.selection.FaceSelection
        self.frame: dict = {}  # the selection's frame: index, count, timestamp_s, fps
        self.reference_override: Optional[np.ndarray] = None  # loaded by the user
        self.run: Optional[RunSnapshot] = None
        self.items: list[ResultItem] = []
        self.header: str = IDLE_HEADER
        self.input_hashes: dict[str, str] = {}  # resolved path -> sha256
        self.last_export: Optional[Path] = None
        self._sample_counter = 0

    # ---------------------------------------------------------------- observing
    def subscribe(self, event: str, callback: Callable) -> Callable[[], None]:
        """Call ``callback`` on ``event``; returns a function that unsubscribes it."""
        if event not in self._listeners:
            raise ValueError(f"Unknown session event {event!r}; one of {', '.join(EVENTS)}.")
        self._listeners[event].append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners[event]:
                self._listeners[event].remove(callback)

        return unsubscribe

    def _emit(self, event: str, *args) -> None:
        for cb in list(self._listeners[event]):
            cb(*args)

    def _set_items(self, items: list[ResultItem]) -> None:
        self.items = list(items)
        self._emit("items")

    def _set_header(self, text: str) -> None:
        self.header = text
        self._emit("header", text)

    # ---------------------------------------------------------------- queries
    def item(self, key: str) -> Optional[ResultItem]:
        return next((it for it in self.items if it.key == key), None)

    def samples(self) -> list[ResultItem]:
        """The generated samples (never the mean estimate)."""
        return [it for it in self.items if it.kind == "sample"]

    @property
    def uncertainty(self):
        """The ``core.uncertainty.UncertaintyMap`` of the shown run's current samples (updated
        when a re-run adds one); None before a run and for a single sample."""
        it = self.item(UNCERTAINTY_KEY)
        return it.uncertainty if it is not None else None

    def _run_items(self) -> list[ResultItem]:
        """The base items of the run: LR, bicubic, mean estimate, reference."""
        run = self.run
        return base_items(run.selection, run.bicubic_metrics, run.reference, run.reference_loaded,
                          run.mean, run.mean_metrics)

    @property
    def can_export(self) -> bool:
        return self.run is not None and bool(self.samples())

    def selection_reference(self, sel=None) -> tuple[Optional[np.ndarray], bool]:
        """The reference HR for a new run on ``sel`` (default: the selection) and whether the
        user loaded it: a loaded one, else the crop when it is genuine HR."""
        if self.reference_override is not None:
            return self.reference_override, True
        sel = self.selection if sel is None else sel
        return (sel.reference if sel is not None else None), False

    def current_reference(self) -> Optional[np.ndarray]:
        """The reference of what is shown (the last run's, else the selection's)."""
        if self.run is not None:
            return self.run.reference
        return self.selection_reference()[0]

    def input_hash(self, path=None) -> Optional[str]:
        path = self.input_path if path is None else path
        return self.input_hashes.get(_path_key(path)) if path is not None else None

    def record_hash(self, path, sha256: str) -> None:
        self.input_hashes.setdefault(_path_key(path), sha256)

    def run_header(self, current_differs: bool = False) -> str:
        run = self.run
        where = run.input_path.name if run.input_path else "the input"
        if run.input_kind == "video":
            where += f", frame {run.frame.get('index', 0)}"
        text = (f"Samples of {where} ({run.selection.kind} face). Generated samples are plausible faces, "
                "not recovered detail.")
        bad = [it.title for it in self.items if it.kind == "sample" and it.warning]
        if bad:
            one = len(bad) == 1
            text += (f" ⚠ {', '.join(bad)} {'does' if one else 'do'} not match the input (the sampler went wrong "
                     f"for {'it' if one else 'them'}): do not rely on {'it' if one else 'them'}.")
        if current_differs:
            text += " The selected face has changed: press Run to sample it."
        return text

    # ---------------------------------------------------------------- input and selection
    def set_input(self, path, kind: str, source_info: Optional[dict] = None) -> None:
        """A new input was opened: its face is not selected yet and a loaded reference no longer applies.
        The last run's images stay until the next run."""
        self.input_path = Path(path) if path is not None else None
        self.input_kind = kind
        self.source_info = {k: v for k, v in (source_info or {}).items() if k not in ("path", "kind")}
        self.reference_override = None
        self.selection, self.frame = None, {}
        if self.run is None:
            self._show_selection()

    def set_selection(self, sel, frame: Optional[dict] = None) -> None:
        """The face to run on (None: none) and the frame it comes from."""
        self.selection = sel
        self.frame = dict(frame or {})
        if self.run is None:
            self._show_selection()
        else:  # results stay until the next run; say what they belong to
            self._set_header(self.run_header(current_differs=not self.run.ran_on(sel)))

    def _show_selection(self) -> None:
        ref, loaded = self.selection_reference()
        self._set_items(base_items(self.selection, reference=ref, reference_loaded=loaded))
        self._set_header(IDLE_HEADER)

    # ---------------------------------------------------------------- reference
    def load_reference(self, path, notes: Optional[list] = None) -> np.ndarray:
        """Load a reference HR (an aligned 128x128 face frame) from a file; see :meth:`set_reference`.
        ``notes`` receives what loading changed (transparency filled with mid-grey)."""
        from .video import load_still

        img = load_still(path, notes=notes)
        self.set_reference(img, Path(path).name)
        return img

    def set_reference(self, image: np.ndarray, name: str = "the reference") -> None:
        """Use ``image`` as the reference HR from now on; the shown run is measured against it too.
        Raises :class:`InputError` unless it is 128x128."""
        img = np.asarray(image)
        if img.shape[:2] != (128, 128):
            raise InputError(f"The reference must be an aligned 128×128 face frame; "
                             f"{name} is {img.shape[1]}×{img.shape[0]}.")
        self.reference_override = img
        if self.run is not None:
            self.run.reference, self.run.reference_loaded = img, True
            self._remeasure_reference()
        else:
            self._show_selection()

    def _remeasure_reference(self) -> None:
        """PSNR / SSIM of the run's images against its (new) reference; CS must be measured again."""
        from . import faces, metrics

        run = self.run
        ref = run.reference
        bic = next((it for it in self.items if it.kind == "bicubic"), None)
        mean = next((it for it in self.items if it.kind == "mean"), None)
        samples = self.samples()
        for it in [x for x in (bic, mean) if x is not None] + samples:
            for k in ("psnr", "ssim", "cs"):
                it.metrics.pop(k, None)
            if ref is not None:
                it.metrics.update(metrics.image_metrics(faces.to_tensor(it.image), None,
                                                        faces.to_tensor(ref))[0])
        if bic is not None:
            run.bicubic_metrics = dict(bic.metrics)
        if mean is not None:
            run.mean_metrics = dict(mean.metrics)
        self._set_items(with_uncertainty(self._run_items() + samples, *self._map_args()))
        self._emit("run")

    # ---------------------------------------------------------------- runs
    def plan_run(self, rerun_key: Optional[str] = None) -> Optional[RunPlan]:
        """A new run on the selected face, or a re-run of sample ``rerun_key`` from its seed.

        Raises :class:`InputError` when no face is selected; returns None when ``rerun_key``
        names no sample with a seed.
        """
        if rerun_key is not None:
            sel = self.run.selection if self.run is not None else None
        else:
            sel = self.selection
        if sel is None:
            raise InputError(NO_FACE)
        if rerun_key is not None:
            item = self.item(rerun_key)
            if item is None or item.seed is None:
                return None
            return RunPlan(sel, self.run.reference, None, seed=int(item.seed), tag=("rerun", rerun_key))
        ref, loaded = self.selection_reference(sel)
        ctx = RunContext(self.input_path, self.input_kind, dict(self.frame), ref, loaded, dict(self.source_info))
        return RunPlan(sel, ref, ctx)

    def record_result(self, out: SamplerOutcome, selection, context=None, model: Optional[dict] = None,
                      classifier: Optional[dict] = None, origin=None) -> list[str]:
        """Record a finished run (or re-run, by ``out.tag``); returns the keys of the new samples.

        ``context`` is the plan's :class:`RunContext` (or a mapping with its fields), ``model``
        and ``classifier`` the loaded models' descriptions, ``origin`` the plan's ``origin`` (the
        session's selection that ``selection``, rescaled for the model, was made from).
        """
        model = dict(model or {})
        rerun = isinstance(out.tag, tuple) and out.tag[0] == "rerun"
        if not rerun or self.run is None:
            ctx = RunContext.of(context)
            self.run = RunSnapshot(
                selection=selection, input_path=ctx.input_path, input_kind=ctx.input_kind, frame=ctx.frame,
                settings=out.settings, model=model, classifier=classifier, device=out.device,
                timings={"load_seconds": round(out.load_seconds, 4), "sampling_seconds": round(out.seconds, 4),
                         "nfe": out.nfe},
                bicubic=out.bicubic, bicubic_metrics=out.bicubic_metrics,
                reference=ctx.reference, reference_loaded=ctx.reference_loaded,
                source_info=dict(ctx.source_info or {}), mean=out.mean, mean_metrics=dict(out.mean_metrics or {}),
                origin=origin)
            self._sample_counter = 0
            items = self._run_items()
            keys = []
            for img, seed, m in zip(out.samples, out.seeds, out.metrics):
                self._sample_counter += 1
                keys.append(f"s{self._sample_counter}")
                items.append(ResultItem(keys[-1], f"Sample {self._sample_counter}", img, "sample",
                                        seed=int(seed), metrics=dict(m), generated=True,
                                        warning=mismatch_warning(m, out.mean_metrics)))
            self._set_items(with_uncertainty(items, *self._map_args()))
            self._set_header(self.run_header(not self.run.ran_on(self.selection)))
        else:  # one more sample; the run's mean estimate (and every other image) stays
            src = self.item(out.tag[1])
            self._sample_counter += 1
            differs = {k: v for k, v in out.settings.items()
                       if k not in ("seed", "seeds", "samples", "sde_params", "mean_estimate")
                       and self.run.settings.get(k) != v}
            own = dict(out.settings)
            if model.get("sha256") != self.run.model.get("sha256") or classifier != self.run.classifier:
                differs["model"] = model.get("name") or model.get("path")
                own["model"], own["classifier"] = model, classifier
            note = (f"re-run of {src.title if src else out.tag[1]}"
                    + (": " + ", ".join(f"{k}={v}" for k, v in differs.items()) if differs else ", same settings"))
            keys = [f"s{self._sample_counter}"]
            # the map is of the run's current samples: it is made again with the new one
            self._set_items(with_uncertainty(self.items + [ResultItem(
                keys[0], f"Sample {self._sample_counter}", out.samples[0], "sample", seed=int(out.seeds[0]),
                metrics=dict(out.metrics[0]), generated=True, note=note, settings=own,
                # measured against the mean estimate this re-run's own model made of the same LR
                warning=mismatch_warning(out.metrics[0], out.mean_metrics))], *self._map_args()))
            if self.item(keys[0]).warning:
                self._set_header(self.run_header(not self.run.ran_on(self.selection)))
            self._emit("added", keys[0])
        self._emit("run")
        return keys

    def set_metrics(self, name: str, values: Mapping[str, float]) -> None:
        """Set metric ``name`` (e.g. ``"cs"``) of the images whose keys ``values`` names."""
        for it in self.items:
            if it.key in values:
                it.metrics[name] = float(values[it.key])
                self._emit("item", it.key)

    def set_favourite(self, key: str, on: bool) -> None:
        it = self.item(key)
        if it is not None:
            it.favourite = bool(on)

    # ---------------------------------------------------------------- export
    def export_keys(self, keys: Optional[Iterable[str]] = None) -> list[str]:
        """The samples to export: ``keys``, else the favourites, else all."""
        if keys is not None:
            return list(keys)
        favs = [it.key for it in self.samples() if it.favourite]
        return favs or [it.key for it in self.samples()]

    def uncertainty_map(self, keys: Optional[Iterable[str]] = None):
        """Where the samples ``keys`` (default: all of the run's samples) disagree: a
        ``core.uncertainty.UncertaintyMap`` of their images, or None for fewer than two samples
        (no map is claimed).  A few milliseconds: fine on the GUI thread."""
        from .uncertainty import uncertainty_map

        wanted = None if keys is None else set(keys)
        imgs = [it.image for it in self.samples() if wanted is None or it.key in wanted]
        return uncertainty_map(imgs, scale=self._map_scale()) if len(imgs) >= 2 else None

    def _map_args(self) -> tuple[float, bool]:
        """(scale, near_mean) of the run's map for :func:`with_uncertainty`."""
        from .uncertainty import started_near_mean

        return self._map_scale(), self.run is not None and started_near_mean(self.run.settings or {})

    def _map_scale(self) -> float:
        """The calibration factor of the run's score model (1 without a run or a factor)."""
        from .uncertainty import run_scale

        return run_scale(self.run.model, self.run.settings) if self.run is not None else 1.0

    def forbidden_folders(self, gallery: Optional[Path] = None) -> list[Path]:
        return forbidden_folders(self.run.input_path if self.run is not None else None, gallery)

    def build_export_job(self, keys: Iterable[str], candidates: Optional[dict] = None):
        """The ``core.report.ExportJob`` of the run with samples ``keys`` (cheap: no hashing)."""
        from .report import ExportImage, ExportJob

        keys = list(keys)
        run = self.run
        sel = run.selection
        images = []
        if sel.crop is not None:
            images.append(ExportImage("input_crop", sel.crop, "crop", False, "Aligned face crop from the input"))
        n = int(sel.lr.shape[0])
        images.append(ExportImage(f"input_lr_{n}x{n}", sel.lr, "lr", False, f"LR input ({n}×{n}) given to the model"))
        if run.reference_loaded and run.reference is not None:
            images.append(ExportImage("reference_hr", run.reference, "reference", False,
                                      "Reference HR (loaded by the user)"))
        bic = next((it for it in self.items if it.kind == "bicubic"), None)
        images.append(ExportImage("bicubic", run.bicubic, "bicubic", False, "Bicubic baseline (interpolation)",
                                  info={k: round(float(v), 6) for k, v in (bic.metrics if bic else {}).items()}))
        if run.mean is not None:  # generated by the model, labelled as an estimate (never a sample)
            mean = self.item(MEAN_KEY)
            info = {"estimate": MEAN_NOTE, **(run.settings.get("mean_estimate") or {})}
            info.update({k: round(float(v), 6) for k, v in (mean.metrics if mean else run.mean_metrics).items()})
            images.append(ExportImage("mean_estimate", run.mean, "mean", True, MEAN_CAPTION, info))
        for it in (it for it in self.samples() if it.key in keys):
            info: dict[str, Any] = {"seed": it.seed, "favourite": it.favourite, "sample": it.title}
            info.update({k: round(float(v), 6) for k, v in it.metrics.items()})
            if it.settings is not None:
                info["sampler"] = it.settings
            if it.note:
                info["note"] = it.note
            if it.warning:
                info["warning"] = it.warning_sentence
            images.append(ExportImage(f"{it.key}_seed{it.seed}", it.image, "sample", True, it.title, info))
        exported = [it for it in self.samples() if it.key in keys]
        images_u, block = self._uncertainty_export(exported)
        images += images_u
        inp: dict[str, Any] = {}
        if run.input_path is not None:
            # the hash of a large video may still be computing: write_export fills it in
            inp = {"path": str(run.input_path), "sha256": self.input_hash(run.input_path), "kind": run.input_kind,
                   **run.source_info}
        notes = [sel.note] if sel.note else []
        if run.reference_loaded:
            notes.append("PSNR / SSIM / CS are measured against a reference HR loaded by the user.")
        title = f"SDE-SR Studio run — {run.input_path.name if run.input_path else 'face'}"
        return ExportJob(images=images, input=inp, frame=run.frame, face=sel.to_dict(), model=run.model,
                         classifier=run.classifier, sampler=run.settings, device=run.device, candidates=candidates,
                         timings=run.timings, notes=notes, title=title, uncertainty=block)

    def _uncertainty_export(self, exported: list[ResultItem]) -> tuple[list, dict]:
        """The map of the exported samples (an image and the record's ``uncertainty`` block),
        with the mean estimate's actual error when a reference HR is known; no map below K = 2."""
        from .report import ExportImage
        from .uncertainty import DEFAULT_VMAX, compare_with_reference, no_map_record, render_std_map

        umap = self.uncertainty_map([it.key for it in exported])
        if umap is None:
            return [], no_map_record(len(exported))
        block = umap.to_dict()
        block["seeds"] = [it.seed for it in exported]
        block["scale_max"] = DEFAULT_VMAX
        run = self.run
        if run.reference is not None and run.mean is not None:
            block["against_hr"] = {"estimate": "the mean estimate",
                                   **compare_with_reference(run.mean, run.reference, umap)}
        img = ExportImage("uncertainty_map", render_std_map(umap.std, samples=umap.samples), "uncertainty", True,
                          f"Uncertainty map: where the {umap.samples} exported samples disagree",
                          {"samples": umap.samples, "seeds": block["seeds"], "scale_max": DEFAULT_VMAX})
        return [img], block

    def plan_export(self, folder, keys: Optional[Iterable[str]] = None,
                    candidates: Optional[Callable[[list[str]], Optional[dict]]] = None,
                    gallery: Optional[Path] = None) -> ExportPlan:
        """Snapshot an export of samples ``keys`` (default: the favourites, else all) into a new
        folder inside ``folder``; ``candidates(keys)`` gives the gallery candidates to include.
        Raises :class:`ExportError` when there is nothing to export."""
        if not self.can_export:
            raise ExportError(NOTHING_TO_EXPORT)
        keys = self.export_keys(keys)
        run = self.run
        stem = run.input_path.stem if run.input_path else "face"
        name = f"{stem}_f{run.frame.get('index', 0)}_{time.strftime('%Y%m%d-%H%M%S')}"
        job = self.build_export_job(keys, candidates(keys) if candidates is not None else None)
        return ExportPlan(job, Path(folder), name, self.forbidden_folders(gallery), keys,
                          _path_key(run.input_path) if run.input_path is not None else None)

    def export_done(self, plan: ExportPlan, result) -> None:
        """Record a written export (``core.report.ExportResult``): its folder, and the input's
        hash when the export had to compute it."""
        inputs = result.record.get("inputs") if isinstance(result.record, dict) else None
        if inputs and plan.input_key is not None:
            sha = inputs[0].get("sha256")
            if sha:
                self.input_hashes.setdefault(plan.input_key, sha)
        self.last_export = result.folder
