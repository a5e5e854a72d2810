"""Background work for the window: every model call runs in a QThread, never on the GUI thread.

* :class:`SamplerJob` loads the model (once; the window caches the Enhancer) and runs the
  sampler; the run's mean estimate comes with the samples, measured like the bicubic. It
  reports progress with an ETA and live frames (x_t, the denoised estimate and, for K >= 2, the
  map of where the samples' denoised estimates disagree, computed and coloured here, not on the
  GUI thread), throttled so a fast sampler cannot flood the GUI thread; Cancel sets an event the sampler checks before
  every step, so it takes effect within one step.
* :class:`FunctionJob` runs any other function (face detection, gallery indexing, matching,
  hashing a large input) with the same error and cancel conventions.

Exceptions never escape ``run()``: they arrive as a ``failed(str)`` signal with one sentence.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

import numpy as np
from PySide6.QtCore import QThread, Signal

from ..core.errors import Cancelled, SdesrError, check_cancel
from ..core.session import SamplerOutcome  # noqa: F401  (the sampler's result, Qt-free)

#: Preview frames per second at most (the GUI gets at least 5/s when steps are fast enough).
PREVIEW_HZ = 8.0
#: Progress updates per second at most.
PROGRESS_HZ = 20.0
#: Samples shown in the live preview at most (the rest are still sampled).
MAX_PREVIEW_SAMPLES = 8


class CancelFlag(threading.Event):
    """A cancel request that works both as an Event (``is_set()``) and as a callable."""

    def __call__(self) -> bool:
        return self.is_set()


class PreviewThrottle:
    """Decides which sampler steps are worth a GUI update: at most one per ``interval`` seconds,
    plus always the first and the last step."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self.interval = float(interval)
        self.clock = clock
        self._last: Optional[float] = None

    def ready(self, step: int, total: int) -> bool:
        now = self.clock()
        if self._last is None or step >= total or now - self._last >= self.interval:
            self._last = now
            return True
        return False


def user_message(exc: BaseException, what: str) -> str:
    """One sentence for a dialog: the message of an expected error, a summary otherwise."""
    if isinstance(exc, (ValueError, SdesrError, FileNotFoundError, PermissionError)):
        msg = str(exc).strip() or exc.__class__.__name__
    elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        msg = f"{what} ran out of memory; use fewer samples or the CPU"
    else:
        msg = f"{what} failed unexpectedly ({exc.__class__.__name__}: {str(exc).strip()[:200]})"
    msg = " ".join(msg.split())
    return msg if msg.endswith((".", "!", "?")) else msg + "."


# ------------------------------------------------------------------------------------------
# sampler
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SamplerRequest:
    weights: str
    classifier: Optional[str]
    device: str
    lr: np.ndarray  # 16x16x3 uint8
    settings: Any  # core.enhance.SamplerSettings
    reference: Optional[np.ndarray] = None  # 128x128x3 uint8
    enhancer: Any = None  # a cached Enhancer for (weights, classifier, device)
    tag: Any = None  # caller's bookkeeping (e.g. which sample a re-run replaces)
    footage: Optional[str] = None  # automatic choice: this footage model judges the LR and runs if it is degraded


@dataclasses.dataclass
class PreviewFrame:
    step: int
    total: int
    sigma: float
    x: list  # uint8 128x128x3 per previewed sample (x_t, scaled for display)
    denoised: list  # uint8 per previewed sample (the network's own estimate of x_0, without guidance)
    samples: int = 0  # K, all samples of the run (the previews show at most MAX_PREVIEW_SAMPLES)
    std: Optional[np.ndarray] = None  # float32 HxW: std over all K denoised estimates (None for K = 1)
    std_rgb: Optional[np.ndarray] = None  # uint8 HxWx3: that map in the colours of every other map


def x_for_display(x, sigma: float):
    """Map a noisy x_t into [0, 1] for display: mid-grey plus (x - 1/2) / (1 + 2 sigma)."""
    return (0.5 + (x - 0.5) / (1.0 + 2.0 * float(sigma))).clamp(0, 1)


class SamplerJob(QThread):
    status = Signal(str)
    progress = Signal(int, int, float, float)  # step, total, elapsed s, eta s
    preview = Signal(object)  # PreviewFrame
    enhancerReady = Signal(object)
    done = Signal(object)  # SamplerOutcome
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, request: SamplerRequest, parent=None,
                 preview_hz: float = PREVIEW_HZ, progress_hz: float = PROGRESS_HZ):
        super().__init__(parent)
        self.request = request
        self._cancel = CancelFlag()
        self._preview = PreviewThrottle(1.0 / preview_hz)
        self._progress = PreviewThrottle(1.0 / progress_hz)
        self.last_step = 0

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def is_cancelling(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:  # runs in the worker thread
        from ..core import faces, metrics
        from ..core.enhance import Enhancer
        from ..core.sampling import SamplingCancelled
        from ..core.uncertainty import DEFAULT_VMAX, colorize, run_scale, running_std_map

        req = self.request
        try:
            t0 = time.perf_counter()
            enh = req.enhancer
            verdict: dict = {}
            if req.footage:  # the automatic choice: clean-trained or footage model, by the LR itself
                self.status.emit("Judging the LR's degradation with the footage model…")
                fenh = Enhancer.from_files(req.footage, req.classifier, device=req.device)
                verdict = fenh.footage_verdict(faces.to_tensor(req.lr))
                self.status.emit(verdict["text"] + ".")
                if verdict["degraded"]:
                    enh = fenh
            if enh is None:
                self.status.emit("Loading the model…")
                enh = Enhancer.from_files(req.weights, req.classifier, device=req.device)
                self.enhancerReady.emit(enh)
            load_s = time.perf_counter() - t0
            check_cancel(self._cancel, SamplingCancelled)
            total = req.settings.n_steps()
            start_at = req.settings.start_sigma
            self.status.emit(f"Sampling {req.settings.samples} sample(s), {total} steps"
                             + (f", from the mean estimate at σ {start_at:g}" if start_at is not None else "") + "…")
            start = time.perf_counter()
            self.progress.emit(0, total, 0.0, -1.0)
            map_scale = run_scale(enh.model_info, req.settings)

            def callback(info) -> None:
                self.last_step = info.step
                if self._progress.ready(info.step, info.total):
                    el = time.perf_counter() - start
                    eta = el / info.step * (info.total - info.step)
                    self.progress.emit(info.step, info.total, el, eta)
                if self._preview.ready(info.step, info.total):
                    k = min(info.x.shape[0], MAX_PREVIEW_SAMPLES)
                    xs = faces.to_uint8(x_for_display(info.x[:k].float().cpu(), info.sigma))
                    ds = faces.to_uint8(info.denoised[:k].float().cpu().clamp(0, 1))
                    # over all K samples, times the model's calibration factor; None for K = 1
                    std = running_std_map(info.denoised, map_scale)
                    rgb = colorize(std, DEFAULT_VMAX) if std is not None else None
                    self.preview.emit(PreviewFrame(info.step, info.total, float(info.sigma), xs, ds,
                                                   int(info.x.shape[0]), std, rgb))

            lr = faces.to_tensor(req.lr)
            res = enh.run(lr, req.settings, callback=callback, cancel=self._cancel)
            hr = faces.to_tensor(req.reference) if req.reference is not None else None
            per = metrics.image_metrics(res.samples, res.lr, hr)
            bic = metrics.image_metrics(res.bicubic, res.lr, hr)[0]
            # the mean estimate (not a sample) is measured like the bicubic baseline
            mean = metrics.image_metrics(res.mean, res.lr, hr)[0] if res.mean is not None else {}
            self.done.emit(SamplerOutcome(
                faces.to_uint8(res.samples), list(res.seeds), faces.to_uint8(res.bicubic)[0], per, bic,
                dict(res.settings), int(res.nfe), float(res.seconds), float(load_s), str(enh.device),
                req.tag, mean=faces.to_uint8(res.mean)[0] if res.mean is not None else None, mean_metrics=mean,
                model=dict(enh.model_info), choice=verdict))
        except Cancelled:
            self.cancelled.emit()
        except BaseException as e:  # noqa: BLE001 - every error becomes a dialog, never a crash
            if not isinstance(e, (ValueError, SdesrError)):  # expected: one sentence, no traceback
                traceback.print_exc(file=sys.stderr)
            self.failed.emit(user_message(e, "Sampling"))


# ------------------------------------------------------------------------------------------
# anything else
# ------------------------------------------------------------------------------------------
class FunctionJob(QThread):
    """Runs ``fn(report, cancel)`` in a thread.

    ``report(*args)`` emits ``progressed(args)`` (throttled; ``(done, total, ...)`` style);
    ``cancel`` is a :class:`CancelFlag` the function should poll. The return value arrives as ``succeeded(result)``.
    """

    progressed = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable[..., Any], what: str, parent=None, progress_hz: float = PROGRESS_HZ):
        super().__init__(parent)
        self.fn = fn
        self.what = what
        self.cancel_event = CancelFlag()
        self._throttle = PreviewThrottle(1.0 / progress_hz)

    def cancel(self) -> None:
        self.cancel_event.set()

    def _report(self, *args) -> None:
        done_total = args[:2] if len(args) >= 2 and all(isinstance(a, int) for a in args[:2]) else (0, 1)
        if self._throttle.ready(int(done_total[0]), int(done_total[1])):
            self.progressed.emit(args)

    def run(self) -> None:
        try:
            result = self.fn(self._report, self.cancel_event)
        except BaseException as e:  # noqa: BLE001
            if self.cancel_event.is_set() or isinstance(e, Cancelled):
                self.cancelled.emit()
                return
            if not isinstance(e, (ValueError, SdesrError)):  # expected: one sentence, no traceback
                traceback.print_exc(file=sys.stderr)
            self.failed.emit(user_message(e, self.what))
            return
        if self.cancel_event.is_set():
            self.cancelled.emit()
        else:
            self.succeeded.emit(result)
