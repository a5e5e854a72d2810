"""Controls: model, sampler preset, SDE, r and h, attributes, samples, seed, device, Run / Cancel,
plus the run's progress and the live intermediate frames (with K >= 2, the map of where the
samples' current estimates disagree)."""

from __future__ import annotations

import html
import random
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QDoubleSpinBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.metrics import format_metric, format_value, metric_tooltip
from ..core.models import training_steps
from ..core.presets import (DEFAULT_GUIDANCE_CAP, DEFAULT_GUIDANCE_SIGMA_MIN, DEFAULT_H, DEFAULT_MEAN_MIRROR,
                            DEFAULT_MIRROR, DEFAULT_SAMPLER, DEFAULT_START_SIGMA, MAX_CORRECTOR_STEPS,
                            MAX_GUIDANCE_CAP, MAX_H, MAX_SAMPLES, SAMPLER_PRESETS)
from ..core.sde import DEFAULT_SDE, SDES
from ..core.uncertainty import CAPTION
from .imaging import pixmap_from_rgb

ATTRIBUTES = (("male", "Male"), ("beard", "Beard"), ("eyeglasses", "Eyeglasses"))
#: the Langevin knobs start at the Paper PC preset's values (they only apply to PC)
DEFAULT_M = SAMPLER_PRESETS["pc"].corrector_steps
DEFAULT_R = SAMPLER_PRESETS["pc"].snr
CHOOSE = "__choose__"
AUTO_LABEL = "Automatic (by face size and LR quality)"
AUTO_INFO = ("16× (8×8 input) for a face under about 12 px wide or an 8×8 image, else 8×; at 8× the footage "
             "model for an LR it judges degraded (noise, blur, compression), else the clean-trained one. "
             "The status bar says which model a run used and why; pick a file to override.")
AUTO_TIP = ("The 8× models read a 16×16 LR, the 16× model an 8×8 one. A face under about 12 px wide has fewer "
            "pixels than a 16×16 LR would claim, so it goes to the 16× model. The footage model first measures "
            "how much of the LR it does not explain (RMS, 0-255); above its threshold the LR counts as degraded "
            "and the footage model runs, otherwise the clean-trained model, which is sharper on clean input.")
MAX_SEED = 2**31 - 1
LIVE_SIZE = 100
LIVE_MAP_NOTE = CAPTION
LIVE_NO_MAP = "No disagreement map with one sample: run 2 or more."


def read_meta(path) -> dict:
    """The checkpoint's metadata (header only; {} when unreadable)."""
    try:
        from ..core.models.checkpoint import read_metadata

        return dict(read_metadata(path))
    except Exception:  # noqa: BLE001 - an unreadable file is simply not offered
        return {}


def find_weights(kind: str) -> list[Path]:
    """Checkpoints of ``kind`` ('score' or 'classifier') in the weights folder, default first."""
    from ..core.enhance import CLASSIFIER_WEIGHTS_NAME, SCORE_WEIGHTS_NAME, weights_dir

    d = weights_dir()
    if not d.is_dir():
        return []
    default = SCORE_WEIGHTS_NAME if kind == "score" else CLASSIFIER_WEIGHTS_NAME
    found = [p for p in sorted(d.glob("*.safetensors")) if read_meta(p).get("kind") == kind]
    found.sort(key=lambda p: p.name != default)
    return found


def list_devices() -> list[tuple[str, str]]:
    """(label, device string): the CPU and every CUDA GPU by name."""
    out = [("CPU", "cpu")]
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                out.append((f"GPU {i}: {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    except Exception:  # noqa: BLE001 - a broken driver leaves the CPU
        pass
    return out


def describe_model(meta: dict, fallback: str) -> str:
    """One short line about a score model from its metadata (name, SDE, data, measured quality)."""
    bits = [str(meta.get("name") or fallback)]
    sde = meta.get("sde")
    if isinstance(sde, dict) and sde.get("type"):
        bits.append(f"{str(sde['type']).upper()} SDE")
    if meta.get("scale_factor"):
        bits.append(f"{meta['scale_factor']}×")
    data = meta.get("training_data")
    if isinstance(data, dict):
        n = data.get("train_images")
        bits.append(f"trained on {data.get('dataset', '?')}" + (f" ({n} faces)" if n else ""))
    elif data:
        bits.append(f"trained on {str(data)[:60]}")
    stages = training_steps(meta)
    if len(stages) > 1:  # warm-started: the total, and the stages
        bits.append(f"{sum(stages)} steps ({' + '.join(str(s) for s in stages)})")
    elif stages:
        bits.append(f"{stages[0]} steps")
    m = meta.get("metrics") or {}
    if "psnr" in m:
        bits.append(f"val {format_metric('psnr', m['psnr'])} (bicubic {format_value('psnr', m.get('psnr_bicubic'))})")
    return " · ".join(bits)


def model_tooltip(meta: dict, path) -> str:
    """The model line's tooltip: the file, and what its validation PSNR measures."""
    if "psnr" not in (meta.get("metrics") or {}):
        return str(path)
    return (f"<p>{html.escape(str(path))}</p><p>val PSNR: the mean PSNR of its samples on the validation "
            f"faces, against their HR (bicubic: the same for bicubic upsampling). "
            f"{html.escape(metric_tooltip('psnr'))}</p>")


R_TIP = ("r: the Langevin corrector's signal-to-noise ratio (Paper PC). Higher r gives smoother images and "
         "higher PSNR; identity similarity peaks near 0.16.")
M_TIP = "M: Langevin corrector steps per predictor step (Paper PC)"
R_FAST_NOTE = ("Not used now: the Fast preset solves the probability-flow ODE and has no Langevin corrector, "
               "so r and M do nothing. Choose Paper PC to use them.")
START_TIP = ("Pure noise (the default): every sample is a draw from the model's posterior, as different from the "
             "others as the LR allows. A noise level σ > 0 starts each sample from the mean estimate with noise of "
             "that level added, so only the detail that noise hides is drawn anew: samples nearer the mean "
             "estimate (higher PSNR, less invented detail) that differ less from each other, so the uncertainty "
             "map then understates what the LR leaves open. The model card measures the trade-off.")

class TriStateAttribute(QCheckBox):
    """present (checked) / absent (unchecked) / unknown (partial, the default)."""

    STATES = {Qt.CheckState.Checked: 1, Qt.CheckState.Unchecked: 0, Qt.CheckState.PartiallyChecked: None}

    def __init__(self, name: str, label: str, parent=None):
        super().__init__(parent)
        self.name, self.base = name, label
        self.setTristate(True)
        self.setCheckState(Qt.CheckState.PartiallyChecked)
        self.checkStateChanged.connect(self._relabel)
        self._relabel()
        self.setToolTip(f"{label}: ■ present · □ absent · ▣ unknown (no guidance). "
                        "Only attributes you set steer the sampler.")

    def value(self) -> Optional[int]:
        return self.STATES[self.checkState()]

    def set_value(self, v: Optional[int]) -> None:
        self.setCheckState({1: Qt.CheckState.Checked, 0: Qt.CheckState.Unchecked}.get(
            v, Qt.CheckState.PartiallyChecked))

    def _relabel(self, *_) -> None:
        v = self.value()
        self.setText(f"{self.base}: {'present' if v == 1 else 'absent' if v == 0 else 'unknown'}")


class ControlsPanel(QWidget):
    runRequested = Signal()
    cancelRequested = Signal()
    modelChanged = Signal()
    previewSampleChanged = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._steps = {k: p.steps for k, p in SAMPLER_PRESETS.items()}
        self._model_prev = 0
        self._cls_prev = 0

        # model
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(14)
        self.cls_combo = QComboBox()
        self.cls_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.cls_combo.setMinimumContentsLength(14)
        self.no_model_label = QLabel()
        self.no_model_label.setWordWrap(True)
        self.no_model_label.setObjectName("warning")
        self.no_model_label.setStyleSheet("QLabel#warning{background:#fff1c2;color:#3a2c00;border:1px solid #d9a400;"
                                          "border-radius:4px;padding:6px}")
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setStyleSheet("color: palette(placeholder-text)")
        mform = QFormLayout()
        mform.addRow("Model", self.model_combo)
        mform.addRow("Attributes", self.cls_combo)
        mbox = QGroupBox("Model")
        mlay = QVBoxLayout(mbox)
        mlay.addLayout(mform)
        mlay.addWidget(self.model_info)
        mlay.addWidget(self.no_model_label)

        # sampler
        self.preset = QComboBox()
        for key, p in SAMPLER_PRESETS.items():
            self.preset.addItem(p.label, key)
            self.preset.setItemData(self.preset.count() - 1, p.summary, Qt.ItemDataRole.ToolTipRole)
        self.sde = QComboBox()
        for key, cls in SDES.items():
            self.sde.addItem(cls.label, key)
            self.sde.setItemData(self.sde.count() - 1, cls.summary, Qt.ItemDataRole.ToolTipRole)
        self.sde.setCurrentIndex(max(self.sde.findData(DEFAULT_SDE), 0))
        self.sde.setToolTip("The SDE the sampler runs under. VE is the model's own; VP and sub-VP use the same "
                            "model through x_t / s(t).")
        self.steps = QSpinBox()
        self.steps.setToolTip("N: sampler steps")
        self.corrector = QSpinBox()
        self.corrector.setRange(0, MAX_CORRECTOR_STEPS)
        self.corrector.setValue(DEFAULT_M)
        self.corrector.setToolTip(M_TIP)
        self.r_slider = QSlider(Qt.Orientation.Horizontal)
        self.r_slider.setRange(0, 100)
        self.r_slider.setValue(int(round(DEFAULT_R * 100)))
        self.r_slider.setToolTip(R_TIP)
        self.r_label = QLabel()
        self.r_label.setMinimumWidth(80)
        self.h_slider = QSlider(Qt.Orientation.Horizontal)
        self.h_slider.setRange(0, int(MAX_H))
        self.h_slider.setValue(int(round(DEFAULT_H)))
        self.h_slider.setToolTip("h: attribute guidance scale (used only for attributes set below)")
        self.h_label = QLabel()
        self.h_label.setMinimumWidth(36)
        self.g_sigma = QDoubleSpinBox()
        self.g_sigma.setRange(0.0, 10.0)
        self.g_sigma.setDecimals(2)
        self.g_sigma.setSingleStep(0.05)
        self.g_sigma.setValue(DEFAULT_GUIDANCE_SIGMA_MIN)
        self.g_sigma.setToolTip("Guidance acts only while the noise level sigma is at least this; the last, "
                                "low-noise steps stay the model's own, so fine detail is not painted by the "
                                "classifier's gradients. 0 = the whole run (SRDG). The default comes from the "
                                "classifier's model card.")
        self.g_cap = QDoubleSpinBox()
        self.g_cap.setRange(0.0, MAX_GUIDANCE_CAP)
        self.g_cap.setDecimals(2)
        self.g_cap.setSingleStep(0.05)
        self.g_cap.setValue(DEFAULT_GUIDANCE_CAP)
        self.g_cap.setSpecialValueText("no cap")
        self.g_cap.setToolTip("Each step's guidance is limited to this fraction of the model's own score, so one "
                              "step of the classifier's gradient cannot paint a pattern over the eyes or the face. "
                              f"0 = no cap (SRDG). Default {DEFAULT_GUIDANCE_CAP:g}.")
        self.mirror = QCheckBox("average with the mirror image (2× time)")
        self.mirror.setChecked(DEFAULT_MIRROR)
        self.mirror.setToolTip("At every step, average the denoiser's estimate of the face with its estimate of the "
                               "left-right mirrored face (flipped back). Faces are mirror-symmetric in distribution, so "
                               "this only removes the network's own lopsidedness: samples come out a little closer to "
                               "the face (+0.1 dB on validation faces) at twice the network work."
                               + (" The mean estimate is always mirror-averaged." if DEFAULT_MEAN_MIRROR else ""))
        self.start_sigma = QDoubleSpinBox()
        self.start_sigma.setRange(0.0, 10.0)
        self.start_sigma.setDecimals(2)
        self.start_sigma.setSingleStep(0.05)
        self.start_sigma.setValue(DEFAULT_START_SIGMA or 0.0)  # 0: pure noise
        self.start_sigma.setSpecialValueText("pure noise (posterior)")
        self.start_sigma.setToolTip(START_TIP)
        sform = QFormLayout()
        sform.addRow("Preset", self.preset)
        sform.addRow("SDE", self.sde)
        sform.addRow("Steps N", self.steps)
        sform.addRow("Corrector M", self.corrector)
        sform.addRow("r (SNR)", self._pair(self.r_slider, self.r_label))
        sform.addRow("h (guidance)", self._pair(self.h_slider, self.h_label))
        sform.addRow("Guide while σ ≥", self.g_sigma)
        sform.addRow("Guidance cap (× score)", self.g_cap)
        sform.addRow("Denoiser", self.mirror)
        sform.addRow("Start from estimate at σ", self.start_sigma)
        sbox = QGroupBox("Sampler")
        sbox.setLayout(sform)

        # attributes
        self.attr_boxes = {name: TriStateAttribute(name, label) for name, label in ATTRIBUTES}
        abox = QGroupBox("What you know (soft biometrics)")
        alay = QGridLayout(abox)
        for i, cb in enumerate(self.attr_boxes.values()):
            alay.addWidget(cb, i // 2, i % 2)

        # samples, seed, device
        self.samples = QSpinBox()
        self.samples.setRange(1, MAX_SAMPLES)
        self.samples.setValue(4)
        self.samples.setToolTip("Number of samples: each is a different plausible face (seed, seed+1, …)")
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setValue(0)
        self.seed.setToolTip("Seed of the first sample; sample k uses seed + k")
        self.random_seed = QCheckBox("random")
        self.random_seed.setToolTip("Draw a new seed for every run (the seed used is shown)")
        self.device = QComboBox()
        for label, dev in list_devices():
            self.device.addItem(label, dev)
        rgrid = QGridLayout()
        rgrid.addWidget(QLabel("Samples"), 0, 0)
        rgrid.addWidget(self.samples, 0, 1)
        rgrid.addWidget(QLabel("Seed"), 0, 2)
        rgrid.addWidget(self.seed, 0, 3)
        rgrid.addWidget(self.random_seed, 0, 4)
        rgrid.addWidget(QLabel("Device"), 1, 0)
        rgrid.addWidget(self.device, 1, 1, 1, 4)
        rgrid.setColumnStretch(3, 1)
        rbox = QGroupBox("Run")
        rlay = QVBoxLayout(rbox)
        rlay.addLayout(rgrid)
        self.run_btn = QPushButton("Run")
        self.run_btn.setDefault(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.run_btn.clicked.connect(self.runRequested)
        self.cancel_btn.clicked.connect(self.cancelRequested)
        btns = QHBoxLayout()
        btns.addWidget(self.run_btn)
        btns.addWidget(self.cancel_btn)
        rlay.addLayout(btns)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        rlay.addWidget(self.progress)

        # live preview
        self.live_x = QLabel()
        self.live_d = QLabel()
        for lab in (self.live_x, self.live_d):
            lab.setFixedSize(LIVE_SIZE, LIVE_SIZE)
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lab.setStyleSheet("background: palette(base)")
        self.live_sample = QSpinBox()
        self.live_sample.setRange(1, 1)
        self.live_sample.setPrefix("sample ")
        self.live_sample.valueChanged.connect(lambda v: self.previewSampleChanged.emit(v - 1))
        self.live_step = QLabel("")
        self.live_map = QLabel()
        self.live_map.setFixedSize(LIVE_SIZE, LIVE_SIZE)
        self.live_map.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.live_map.setStyleSheet("background: palette(base)")
        self.live_map.setToolTip("Per pixel, the standard deviation over all samples' current denoised estimates: "
                                 f"{CAPTION}. Updated with every live frame.")
        self.live_map_note = QLabel(LIVE_MAP_NOTE)
        self.live_map_note.setWordWrap(True)
        lbox = QGroupBox("Live")
        lgrid = QGridLayout(lbox)
        lgrid.addWidget(QLabel("x_t"), 0, 0)
        lgrid.addWidget(QLabel("denoised"), 0, 1)
        lgrid.addWidget(QLabel("disagreement"), 0, 2)
        lgrid.addWidget(self.live_x, 1, 0)
        lgrid.addWidget(self.live_d, 1, 1)
        lgrid.addWidget(self.live_map, 1, 2)
        lgrid.addWidget(self.live_sample, 2, 0)
        lgrid.addWidget(self.live_step, 2, 1, 1, 2)
        lgrid.addWidget(self.live_map_note, 3, 0, 1, 3)
        self.live_x.setToolTip("The noisy state x_t (scaled by 1/(1+2σ) around mid-grey to stay visible)")
        self.live_d.setToolTip("The model's own current estimate of the clean face: the denoiser given the LR "
                               "(attribute guidance steers the steps but is not added to this picture)")

        lay = QVBoxLayout(self)
        for w in (mbox, sbox, abox, rbox, lbox):
            lay.addWidget(w)
        lay.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

        self.preset.currentIndexChanged.connect(self._on_preset)
        self.sde.currentIndexChanged.connect(self._on_preset)  # the steps' minimum depends on the SDE
        self.steps.valueChanged.connect(self._remember_steps)
        self.r_slider.valueChanged.connect(self._update_labels)
        self.h_slider.valueChanged.connect(self._update_labels)
        self.model_combo.activated.connect(self._on_model_activated)
        self.cls_combo.activated.connect(self._on_cls_activated)
        self.refresh_models()
        self._on_preset()
        self._update_labels()

    @staticmethod
    def _pair(a: QWidget, b: QWidget) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(a, 1)
        h.addWidget(b)
        return w

    # ---------------------------------------------------------------- models
    def refresh_models(self, keep: bool = True) -> None:
        cur_m, cur_c = (self.weights_path(), self.classifier_path()) if keep and self.model_combo.count() else (None, None)
        self.model_combo.blockSignals(True)
        self.cls_combo.blockSignals(True)
        self.model_combo.clear()
        self.cls_combo.clear()
        from ..core.enhance import AUTO_MODEL, FOOTAGE_WEIGHTS_NAME, SCORE_WEIGHTS_16X_NAME, find_default_weights

        found = find_weights("score")
        if any(find_default_weights(n) is not None for n in (SCORE_WEIGHTS_16X_NAME, FOOTAGE_WEIGHTS_NAME)):
            # more than one shipped model: choose per face
            self.model_combo.addItem(AUTO_LABEL, AUTO_MODEL)
            self.model_combo.setItemData(0, AUTO_TIP, Qt.ItemDataRole.ToolTipRole)
        for p in found:
            self.model_combo.addItem(p.name, str(p))
        if self.model_combo.count() == 0:
            self.model_combo.addItem("(no model installed)", None)
        self.model_combo.addItem("Choose file…", CHOOSE)
        self.cls_combo.addItem("None (no attribute guidance)", None)
        for p in find_weights("classifier"):
            self.cls_combo.addItem(p.name, str(p))
        self.cls_combo.addItem("Choose file…", CHOOSE)
        if self.cls_combo.count() > 2:
            self.cls_combo.setCurrentIndex(1)
        self.model_combo.blockSignals(False)
        self.cls_combo.blockSignals(False)
        if cur_m and self.model_combo.findData(cur_m) >= 0:
            self.model_combo.setCurrentIndex(self.model_combo.findData(cur_m))
        elif cur_m:
            self.add_model_file(cur_m, "score")
        if cur_c:
            self.add_model_file(cur_c, "classifier")
        self._model_prev = self.model_combo.currentIndex()
        self._cls_prev = self.cls_combo.currentIndex()
        self._on_models_changed(reset_h=not cur_c)

    def weights_path(self) -> Optional[str]:
        d = self.model_combo.currentData()
        return d if d not in (None, CHOOSE) else None

    def classifier_path(self) -> Optional[str]:
        d = self.cls_combo.currentData()
        return d if d not in (None, CHOOSE) else None

    def add_model_file(self, path, kind: str = "score") -> bool:
        """Offer and select a checkpoint file; False (with the info label saying why) if unusable."""
        combo = self.model_combo if kind == "score" else self.cls_combo
        p = str(Path(path))
        meta = read_meta(p)
        if meta.get("kind") != kind:
            what = "score model" if kind == "score" else "attribute classifier"
            self.model_info.setText(f"{Path(p).name} is not a {what} checkpoint (.safetensors from `sdesr train`).")
            return False
        idx = combo.findData(p)
        if idx < 0:
            if kind == "score" and combo.itemData(0) is None:
                combo.removeItem(0)
            idx = combo.count() - 1  # before "Choose file…"
            combo.insertItem(idx, Path(p).name, p)
            combo.setItemData(idx, p, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(idx)
        if kind == "score":
            self._model_prev = idx
        else:
            self._cls_prev = idx
        self._on_models_changed(reset_h=(kind == "classifier"))
        return True

    def _on_model_activated(self, idx: int) -> None:
        if self.model_combo.itemData(idx) == CHOOSE:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a score model", "",
                                                  "SDE-SR weights (*.safetensors)")
            if not path or not self.add_model_file(path, "score"):
                self.model_combo.setCurrentIndex(self._model_prev)
            return
        self._model_prev = idx
        self._on_models_changed()

    def _on_cls_activated(self, idx: int) -> None:
        if self.cls_combo.itemData(idx) == CHOOSE:
            path, _ = QFileDialog.getOpenFileName(self, "Choose an attribute classifier", "",
                                                  "SDE-SR weights (*.safetensors)")
            if not path or not self.add_model_file(path, "classifier"):
                self.cls_combo.setCurrentIndex(self._cls_prev)
            return
        self._cls_prev = idx
        self._on_models_changed(reset_h=True)

    def _on_models_changed(self, reset_h: bool = False) -> None:
        from ..core.enhance import AUTO_MODEL, SCORE_WEIGHTS_NAME, weights_dir

        w = self.weights_path()
        if w is None:
            self.no_model_label.setText(
                f"<b>No trained model is installed</b> ({weights_dir() / SCORE_WEIGHTS_NAME} is missing). "
                "Choose a model file in the Model list, or train one with <code>sdesr train score</code>.")
            self.no_model_label.show()
            self.model_info.setText("")
        elif w == AUTO_MODEL:
            from ..core.enhance import FOOTAGE_WEIGHTS_NAME, SCALES, find_default_weights

            self.no_model_label.hide()
            self.model_info.setText(AUTO_INFO)
            lines = []
            for label, name in [*((f"{sc}×", n) for sc, n in SCALES.items()), ("8× footage", FOOTAGE_WEIGHTS_NAME)]:
                f = find_default_weights(name)
                if f is not None:
                    lines.append(f"{label}: " + describe_model(read_meta(f), f.stem))
            self.model_info.setToolTip("\n".join([AUTO_TIP, *lines]))
        else:
            self.no_model_label.hide()
            meta = read_meta(w)
            self.model_info.setText(describe_model(meta, Path(w).stem))
            self.model_info.setToolTip(model_tooltip(meta, w))
        c = self.classifier_path()
        for cb in self.attr_boxes.values():
            cb.setEnabled(c is not None)
            if c is None:
                cb.set_value(None)
        self.h_slider.setEnabled(c is not None)
        self.g_sigma.setEnabled(c is not None)
        self.g_cap.setEnabled(c is not None)
        if c is not None:
            cmeta = read_meta(c)
            names = cmeta.get("attributes") or (cmeta.get("config") or {}).get("attributes")
            for name, cb in self.attr_boxes.items():
                if names and name not in names:
                    cb.set_value(None)
                    cb.setEnabled(False)
            if reset_h:
                self.h_slider.setValue(int(round(self.default_h())))
                self.g_sigma.setValue(self.default_guidance_sigma_min())
        self.modelChanged.emit()

    def _classifier_card(self, key: str, default: float) -> float:
        """A number from the selected classifier's model card, or ``default``."""
        c = self.classifier_path()
        v = read_meta(c).get(key) if c else None
        try:
            return float(v) if v is not None else default
        except (TypeError, ValueError):
            return default

    def default_h(self) -> float:
        """The classifier's model-card guidance scale (500, as in SRDG, when it does not say)."""
        return self._classifier_card("default_h", DEFAULT_H)

    def default_guidance_sigma_min(self) -> float:
        """The classifier's model-card guidance interval (0, the whole run, when it does not say)."""
        return self._classifier_card("guidance_sigma_min", DEFAULT_GUIDANCE_SIGMA_MIN)

    # ---------------------------------------------------------------- sampler
    def sampler_key(self) -> str:
        return self.preset.currentData()

    def sde_key(self) -> str:
        return self.sde.currentData() or DEFAULT_SDE

    def _on_preset(self, *_) -> None:
        key = self.sampler_key()
        self.steps.blockSignals(True)
        # PC under VP / sub-VP needs N >= the SDE's minimum (fewer give NaN or wildly wrong samples)
        low = SDES[self.sde_key()]().pc_min_steps() if SAMPLER_PRESETS[key].is_pc else 1
        self.steps.setRange(low, SAMPLER_PRESETS[key].max_steps)
        self.steps.setValue(max(self._steps[key], low))
        self.steps.blockSignals(False)
        pc = SAMPLER_PRESETS[key].is_pc
        self.corrector.setEnabled(pc)
        self.r_slider.setEnabled(pc)
        self.r_label.setEnabled(pc)
        # a disabled slider looks much like an active one in some styles: say it in words too
        why = "" if pc else R_FAST_NOTE
        for w in (self.corrector, self.r_slider, self.r_label):
            w.setToolTip((R_TIP if w is not self.corrector else M_TIP) + (f"\n\n{why}" if why else ""))
        self.start_sigma.setEnabled(not pc)
        self.start_sigma.setToolTip(START_TIP + ("\n\nThe fast sampler only." if pc else ""))
        self._update_labels()

    def _remember_steps(self, v: int) -> None:
        self._steps[self.sampler_key()] = int(v)

    def _update_labels(self, *_) -> None:
        pc = SAMPLER_PRESETS[self.sampler_key()].is_pc
        self.r_label.setText(f"{self.r_value():.2f}" if pc else "— (PC only)")
        self.h_label.setText(f"{self.h_slider.value():d}")

    def r_value(self) -> float:
        return self.r_slider.value() / 100.0

    def attributes(self) -> dict:
        return {n: cb.value() for n, cb in self.attr_boxes.items()}

    def take_settings(self, draw_seed: bool = True):
        """The SamplerSettings for a run; draws (and shows) a new seed when 'random' is on and
        ``draw_seed`` (a re-run of one sample keeps that sample's seed: nothing is drawn)."""
        from ..core.enhance import SamplerSettings

        if draw_seed and self.random_seed.isChecked():
            self.seed.setValue(random.SystemRandom().randrange(0, MAX_SEED - 64))
        key = self.sampler_key()
        return SamplerSettings(
            sampler=key, sde=self.sde_key(), steps=int(self.steps.value()),
            corrector_steps=int(self.corrector.value()), snr=self.r_value(), h=float(self.h_slider.value()),
            guidance_sigma_min=float(self.g_sigma.value()), guidance_cap=float(self.g_cap.value()),
            attributes=self.attributes(), samples=int(self.samples.value()), seed=int(self.seed.value()),
            mirror=self.mirror.isChecked(), start_sigma=self.start_sigma_value(key))

    def start_sigma_value(self, key: str | None = None) -> float | None:
        """The fast sampler's start noise level, None for pure noise (0 in the box, or PC)."""
        v = float(self.start_sigma.value())
        return v if v > 0 and not SAMPLER_PRESETS[key or self.sampler_key()].is_pc else None

    def device_name(self) -> str:
        return self.device.currentData() or "cpu"

    # ---------------------------------------------------------------- running
    def set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for w in (self.model_combo, self.cls_combo, self.device):
            w.setEnabled(not running)
        if running:
            self.live_map.clear()  # the last run's map is not this run's
            self.progress.setRange(0, 0)  # busy until the first step
            self.progress.setFormat("starting…")

    def show_progress(self, step: int, total: int, elapsed: float, eta: float) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(step)
        text = f"step {step}/{total} · {elapsed:.1f} s"
        if step > 0 and eta >= 0:
            text += f" · about {eta:.1f} s left"
        self.progress.setFormat(text)
        self.progress.setToolTip(text)

    def show_preview(self, x: np.ndarray, d: np.ndarray, step: int, total: int, sigma: float, count: int,
                     std_rgb: Optional[np.ndarray] = None) -> None:
        """One live frame: x_t and the denoised estimate of the chosen sample, and ``std_rgb``
        (the coloured map of where all samples' estimates disagree; None: one sample, no map)."""
        self.live_sample.setRange(1, max(1, count))
        self.live_x.setPixmap(pixmap_from_rgb(x, LIVE_SIZE, smooth=True))
        self.live_d.setPixmap(pixmap_from_rgb(d, LIVE_SIZE, smooth=True))
        self.live_step.setText(f"step {step}/{total}\nσ = {sigma:.3g}")
        if std_rgb is not None:
            self.live_map.setPixmap(pixmap_from_rgb(std_rgb, LIVE_SIZE))
            self.live_map_note.setText(LIVE_MAP_NOTE)
        else:
            self.live_map.clear()
            self.live_map_note.setText(LIVE_NO_MAP)

    def finish_progress(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if text.startswith("Done") else 0)
        self.progress.setFormat(text)
        self.progress.setToolTip(text)

    # ---------------------------------------------------------------- settings
    def save(self, s) -> None:
        s.setValue("controls/preset", self.sampler_key())
        s.setValue("controls/sde", self.sde_key())
        for key, n in self._steps.items():
            s.setValue(f"controls/steps_{key}", n)
        s.setValue("controls/corrector", self.corrector.value())
        s.setValue("controls/r", self.r_slider.value())
        s.setValue("controls/h", self.h_slider.value())
        s.setValue("controls/guidance_sigma_min", self.g_sigma.value())
        s.setValue("controls/guidance_cap", self.g_cap.value())
        s.setValue("controls/samples", self.samples.value())
        s.setValue("controls/mirror", self.mirror.isChecked())
        s.setValue("controls/start_sigma", self.start_sigma.value())
        s.setValue("controls/seed", self.seed.value())
        s.setValue("controls/random_seed", self.random_seed.isChecked())
        s.setValue("controls/device", self.device_name())
        s.setValue("controls/model", self.weights_path() or "")
        s.setValue("controls/classifier", self.classifier_path() or "")
        for n, cb in self.attr_boxes.items():
            v = cb.value()
            s.setValue(f"controls/attr_{n}", "" if v is None else str(v))

    def restore(self, s) -> None:
        def get_int(key, default):
            try:
                return int(s.value(key, default))
            except (TypeError, ValueError):
                return default

        model = s.value("controls/model", "")
        if model and self.model_combo.findData(model) >= 0:  # the automatic choice, or a listed file
            self.model_combo.setCurrentIndex(self.model_combo.findData(model))
            self._model_prev = self.model_combo.currentIndex()
            self._on_models_changed()
        elif model and Path(model).is_file():
            self.add_model_file(model, "score")
        cls = s.value("controls/classifier", None)
        if cls and Path(cls).is_file():
            self.add_model_file(cls, "classifier")
        elif cls == "":
            self.cls_combo.setCurrentIndex(0)
            self._cls_prev = 0
            self._on_models_changed()
        for key, p in SAMPLER_PRESETS.items():
            self._steps[key] = min(max(get_int(f"controls/steps_{key}", self._steps[key]), 1), p.max_steps)
        idx = self.preset.findData(s.value("controls/preset", DEFAULT_SAMPLER))
        self.preset.setCurrentIndex(max(idx, 0))
        self._on_preset()
        idx = self.sde.findData(s.value("controls/sde", DEFAULT_SDE))
        self.sde.setCurrentIndex(idx if idx >= 0 else self.sde.findData(DEFAULT_SDE))
        self.corrector.setValue(get_int("controls/corrector", DEFAULT_M))
        self.r_slider.setValue(get_int("controls/r", int(round(DEFAULT_R * 100))))
        self.h_slider.setValue(get_int("controls/h", self.h_slider.value()))
        try:
            self.g_sigma.setValue(float(s.value("controls/guidance_sigma_min", self.g_sigma.value())))
        except (TypeError, ValueError):
            pass
        try:
            self.g_cap.setValue(float(s.value("controls/guidance_cap", self.g_cap.value())))
        except (TypeError, ValueError):
            pass
        self.samples.setValue(get_int("controls/samples", 4))
        self.mirror.setChecked(str(s.value("controls/mirror", str(DEFAULT_MIRROR))).lower() == "true")
        try:
            self.start_sigma.setValue(float(s.value("controls/start_sigma", DEFAULT_START_SIGMA or 0.0)))
        except (TypeError, ValueError):
            pass
        self.seed.setValue(get_int("controls/seed", 0))
        self.random_seed.setChecked(str(s.value("controls/random_seed", "false")).lower() == "true")
        dev = self.device.findData(s.value("controls/device", "cpu"))
        if dev >= 0:
            self.device.setCurrentIndex(dev)
        for n, cb in self.attr_boxes.items():
            v = s.value(f"controls/attr_{n}", "")
            if cb.isEnabled():
                cb.set_value(int(v) if v in ("0", "1") else None)
