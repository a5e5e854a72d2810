"""Comparison view: LR (nearest), bicubic, the mean estimate, the uncertainty map and every
sample side by side at one zoom, a before/after split between any two, per-image metrics,
favourites and re-run from a seed.

The uncertainty map (K >= 2 samples; made by the Qt-free session) has its own tile with its
colour scale; a toggle lays it over the samples and the mean estimate (tiles and before/after)
at a chosen opacity, and a line above the tiles says per face region whether the samples agree.
Bright = the samples disagree = invented detail, wherever the map is shown."""

from __future__ import annotations

import html
from typing import Optional

import numpy as np
from PySide6.QtCore import QCoreApplication, QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.metrics import METRICS, format_metric, format_value, metric_header
from ..core.presets import DEFAULT_MEAN_MIRROR
from ..core.session import ResultItem
from ..core.uncertainty import CAPTION, DEFAULT_VMAX, colormap_lut, overlay, region_agreement
from .imaging import nearest_upscale, pixmap_from_rgb, qimage_from_rgb

#: what the mean estimate's tile says when hovered: the most accurate single image, not a sample
MEAN_TOOLTIP = ("Mean estimate: the model's posterior-mean estimate of this face (the network's estimate at the "
                "top noise level" + (", averaged with its estimate of the mirrored face" if DEFAULT_MEAN_MIRROR else "")
                + "; the same image every time). It is the most accurate single image (highest PSNR / SSIM) but "
                "blurrier than a sample: it invents no detail. It is an estimate, not a sample.")
#: the overlay toggle: what it does, said plainly
OVERLAY_LABEL = "Show where samples disagree"
OVERLAY_TOOLTIP = ("Lay the uncertainty map over every sample and the mean estimate (here and in Before / after): "
                   "bright = the samples disagree = invented detail; dark = they agree, the input constrains it.")
NO_MAP_ONE_SAMPLE = ("No uncertainty map: one sample cannot show which detail is invented. "
                     "Run 2 or more samples to see where they disagree.")
DEFAULT_OPACITY = 50  # percent
OVERLAID_KINDS = ("sample", "mean")  # the images the map can be laid over
ZOOMS = (0, 1, 2, 3, 4)  # 0 = fit: the largest zoom at which every tile is visible
TILE_EXTRA_W, TILE_EXTRA_H = 40, 112  # tile chrome around the image (title, metrics, buttons)


#: The images the view shows are the session's (Qt-free) result items.
CompareItem = ResultItem


def display_image(item: CompareItem) -> np.ndarray:
    """The 128×128 picture of an item (the 16×16 LR nearest-upscaled)."""
    return nearest_upscale(item.image, 128) if item.image.shape[0] != 128 else item.image


#: the per-image metrics a tile shows, in this order (what core.metrics.image_metrics and CS give)
TILE_METRICS = ("consistency", "psnr", "ssim", "cs")


def metrics_text(m: dict[str, float], fits=None) -> str:
    """The tile's caption: one metric a line with its unit and direction ("PSNR 24.10 dB ↑").

    ``fits(line) -> bool`` says whether a line fits the tile; a line that does not has its unit
    moved to the next line ("consistency 2.31 ↓" then "  (0–255)²"), so the tile keeps its width."""
    lines = []
    for k in TILE_METRICS:
        if k in m:
            line, info = format_metric(k, m[k]), METRICS[k]
            if fits is not None and not fits(line) and info.unit:
                lines.append(f"{info.label} {format_value(k, m[k]).removesuffix(info.unit).strip()} {info.arrow}")
                line = f"  {info.unit}"
            lines.append(line)
    return "\n".join(lines)


def _legend_row(key: str, shown: str) -> str:
    info = METRICS[key]
    return (f"<p><b>{html.escape(shown)}</b> — {html.escape(info.line)} "
            f"<i>{info.direction.capitalize()}</i>; range {html.escape(info.range)}.</p>")


def metrics_tooltip(m: dict[str, float]) -> str:
    """The caption's tooltip: what each shown number measures, which way is better, its range."""
    return "".join(_legend_row(k, format_metric(k, m[k])) for k in TILE_METRICS if k in m)


def uncertainty_tooltip(umap) -> str:
    """The map tile's tooltip: what the map is, and every region in words with its numbers."""
    rows = "".join(
        f"<tr><td>{r['label']}</td><td>{'<b>' if r['verdict'] != 'agree' else ''}"
        f"{r['text'].split(': ', 1)[1]}{'</b>' if r['verdict'] != 'agree' else ''}</td>"
        f"<td align='right'>{format_value('mean_std', r['mean_std'])}</td>"
        f"<td align='right'>{format_value('share_above_threshold', r['share_above'])}</td></tr>"
        for r in region_agreement(umap))
    std_head = html.escape(metric_header("mean_std"))
    share_head = f"above {umap.threshold:g} {METRICS['share_above_threshold'].arrow}"
    return (f"<p><b>Where the {umap.samples} samples disagree.</b> Per pixel, the standard deviation over the "
            f"samples ([0, 1] units). <b>Bright = the samples disagree = invented detail</b>; dark = they agree, "
            f"so the input constrains that detail. Where they disagree, the mean estimate is likely wrong too.</p>"
            f"<table cellspacing='4'><tr><th align='left'>region</th><th align='left'>the samples</th>"
            f"<th>{std_head}</th><th>{share_head}</th></tr>{rows}</table>"
            f"<p>Face box: {format_value('share_above_threshold', umap.share_above)} of its pixels have a std "
            f"above {umap.threshold:g}.</p>"
            + _legend_row("mean_std", metric_header("mean_std"))
            + _legend_row("share_above_threshold", share_head))


#: how the line above the tiles names each verdict (the words of core.uncertainty.region_agreement)
VERDICT_WORDS = (("disagree", "Samples disagree — detail invented"),
                 ("partly", "Samples partly disagree — some detail invented"),
                 ("agree", "Samples agree"))


def agreement_summary(umap) -> str:
    """The line above the tiles: the face regions grouped by whether the K samples agree."""
    groups: dict[str, list[str]] = {v: [] for v, _ in VERDICT_WORDS}
    for r in region_agreement(umap):
        groups[r["verdict"]].append(r["label"])
    parts = [f"{words}: {', '.join(groups[v])}." for v, words in VERDICT_WORDS if groups[v]]
    return f"{umap.samples} samples, by region: " + " ".join(parts)


#: the map's legend at the head of that line (rich text: the two ends of the colour scale)
LEGEND = ("<span style='background:#ffea46;color:#00204d'>&nbsp;bright&nbsp;</span> = samples disagree = "
          "invented detail; <span style='background:#00204d;color:white'>&nbsp;dark&nbsp;</span> = they agree. ")


class ScaleBar(QWidget):
    """The colour scale of the map: 0 (dark, samples agree) to DEFAULT_VMAX+ (bright, samples
    disagree), ticks every quarter, the threshold marked."""

    HEIGHT = 30

    def __init__(self, vmax: float = DEFAULT_VMAX, threshold: Optional[float] = None, parent=None):
        super().__init__(parent)
        self.vmax, self.threshold = float(vmax), threshold
        lut = colormap_lut(256)
        self._bar = qimage_from_rgb(np.repeat(lut[None], 2, axis=0))
        self.setFixedHeight(self.HEIGHT)
        self.setToolTip(f"std over the samples, [0, 1] units; {CAPTION}"
                        + (f"; the line marks the threshold {threshold:g}" if threshold else ""))

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        fm = p.fontMetrics()
        bar = QRectF(0.5, 0.5, self.width() - 1.0, 10.0)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawImage(bar, self._bar)
        text = self.palette().color(self.palette().ColorRole.WindowText)
        p.setPen(QPen(text, 1))
        p.drawRect(bar)
        n = 4 if self.width() >= 5 * fm.horizontalAdvance("0.20+ ") else 2  # labels must not touch
        for i in range(n + 1):
            x = bar.left() + bar.width() * i / n
            p.drawLine(int(x), int(bar.bottom()), int(x), int(bar.bottom()) + 3)
            t = f"{self.vmax * i / n:.2f}" + ("+" if i == n else "")
            w = fm.horizontalAdvance(t)
            tx = min(max(x - w / 2, 0), self.width() - w)
            p.drawText(int(tx), int(bar.bottom()) + 4 + fm.ascent(), t)
        if self.threshold and 0 < self.threshold < self.vmax:
            x = bar.left() + bar.width() * self.threshold / self.vmax
            p.setPen(QPen(QColor(255, 255, 255), 3))
            p.drawLine(int(x), int(bar.top()), int(x), int(bar.bottom()))
            p.setPen(QPen(QColor(0, 0, 0), 1))
            p.drawLine(int(x), int(bar.top()), int(x), int(bar.bottom()))


class Tile(QFrame):
    clicked = Signal(str)
    favouriteToggled = Signal(str, bool)
    rerunRequested = Signal(str)

    def __init__(self, item: CompareItem, zoom: int, parent=None):
        super().__init__(parent)
        self.item = item
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.metrics = QLabel()
        self.metrics.setStyleSheet("font-family: monospace")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.image)
        self.scale = None
        self._grid_width: Optional[int] = None  # the width of the grid cell (set by the view)
        self._caption_room: Optional[int] = None  # the room the captions were last fitted to
        self._overlay: Optional[tuple[np.ndarray, float]] = None  # (std, opacity) laid over the image
        if item.kind == "uncertainty" and item.uncertainty is not None:
            self.scale = ScaleBar(DEFAULT_VMAX, item.uncertainty.threshold)
            lay.addWidget(self.scale)
            self.metrics.setStyleSheet("")
            self.metrics.setWordWrap(True)
            self.setToolTip(uncertainty_tooltip(item.uncertainty))
        lay.addWidget(self.metrics)
        self.fav = None
        if item.kind == "mean":
            self.setToolTip(MEAN_TOOLTIP)
        if item.kind == "sample":
            row = QHBoxLayout()
            self.fav = QCheckBox("★")
            self.fav.setToolTip("Favourite: exported by default")
            self.fav.setChecked(item.favourite)
            self.fav.toggled.connect(lambda on: self.favouriteToggled.emit(self.item.key, on))
            self.rerun = QToolButton(text="↻ seed")
            self.rerun.setToolTip("Sample this seed again with the current controls (new r, h or attributes)")
            self.rerun.clicked.connect(lambda: self.rerunRequested.emit(self.item.key))
            row.addWidget(self.fav)
            row.addStretch(1)
            row.addWidget(self.rerun)
            lay.addLayout(row)
        self.set_zoom(zoom)
        self.refresh()

    def set_zoom(self, zoom: int) -> None:
        self._zoom = zoom
        img = display_image(self.item)
        if self._overlay is not None:
            img = overlay(img, self._overlay[0], self._overlay[1], DEFAULT_VMAX)
        self.image.setPixmap(pixmap_from_rgb(img, 128 * zoom))
        if self.scale is not None:
            self.scale.setFixedWidth(128 * zoom)
            self.metrics.setFixedWidth(128 * zoom)
            self._fit_wrapped_caption()
        if self._caption_room is not None and self._caption_room != self.caption_room():
            self.refresh()  # the captions fit the new width

    def _fit_wrapped_caption(self) -> None:
        """A word-wrapped caption of fixed width reserves the height of all its lines (the layout
        would size it for a wider label, and the tile would then clip the image and the caption)."""
        if self.metrics.wordWrap():
            self.metrics.setMinimumHeight(max(0, self.metrics.heightForWidth(self.metrics.maximumWidth())))

    def caption_room(self) -> int:
        """Pixels a caption line may take: the width the grid gives this tile (set by the view),
        else the nominal tile width, less the tile's margins (6) and its widest frame (3, selected)."""
        width = self._grid_width or 128 * self._zoom + TILE_EXTRA_W
        return width - 2 * 6 - 2 * 3 - 2

    def set_grid_width(self, width: Optional[int]) -> None:
        """The width of this tile's grid cell (None: not laid out yet)."""
        if width != self._grid_width:
            self._grid_width = width
            if self._caption_room is not None and self._caption_room != self.caption_room():
                self.refresh()

    def set_overlay(self, std: Optional[np.ndarray], opacity: float = DEFAULT_OPACITY / 100) -> None:
        """Lay the map ``std`` over this tile's image at ``opacity`` (None: the image alone);
        only samples and the mean estimate take it."""
        want = (std, float(opacity)) if std is not None and self.item.kind in OVERLAID_KINDS else None
        if want is None and self._overlay is None:
            return
        self._overlay = want
        self.set_zoom(self._zoom)

    def refresh(self) -> None:
        tag = ""
        if self.item.generated:
            tag = "<span style='background:#b3261e;color:white'>&nbsp;GENERATED&nbsp;</span>"
        if self.item.kind == "mean":
            tag += " <span style='background:#5c6bc0;color:white'>&nbsp;ESTIMATE&nbsp;</span>"
        if self.item.kind == "uncertainty":
            tag = "<span style='background:#1f3a5f;color:#ffe94a'>&nbsp;BRIGHT = INVENTED&nbsp;</span>"
        if self.item.warning:  # a sample that does not reproduce its LR input (core.metrics.lr_mismatch)
            tag += "<br><span style='background:#e65100;color:white'>&nbsp;⚠ DOES NOT MATCH INPUT&nbsp;</span>"
        self.title.setToolTip(self.item.warning_sentence)
        seed = f" · seed {self.item.seed}" if self.item.seed is not None else ""
        self.title.setText(f"<b>{self.item.title}</b>{seed}<br>{tag}" if tag else f"<b>{self.item.title}</b>{seed}")
        umap = self.item.uncertainty if self.item.kind == "uncertainty" else None
        if umap is not None:
            self.metrics.setText(f"{CAPTION}.\nstd over {umap.samples} samples, [0, 1] units. Face above "
                                 f"{umap.threshold:g}: {format_value('share_above_threshold', umap.share_above)} "
                                 f"{METRICS['share_above_threshold'].arrow}. Hover for the regions.")
            self._fit_wrapped_caption()
            return
        self._caption_room = room = self.caption_room()
        self.metrics.ensurePolished()  # the monospace font of its style sheet, not the default
        fm = self.metrics.fontMetrics()
        text = metrics_text(self.item.metrics, lambda line: fm.horizontalAdvance(line) <= room)
        self.metrics.setToolTip(metrics_tooltip(self.item.metrics))
        if self.item.note:
            text = (text + "\n" if text else "") + self.item.note
        self.metrics.setText(text or " ")
        if self.fav is not None and self.fav.isChecked() != self.item.favourite:
            self.fav.blockSignals(True)
            self.fav.setChecked(self.item.favourite)
            self.fav.blockSignals(False)

    def set_selected(self, on: bool) -> None:
        self.setLineWidth(3 if on else 1)
        self.setStyleSheet("Tile{border:2px solid palette(highlight)}" if on else "")

    def mousePressEvent(self, e) -> None:
        if e.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.item.key)
        super().mousePressEvent(e)


class SplitView(QWidget):
    """Image A left of the divider, image B right of it, drawn at one zoom."""

    splitChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._a = self._b = None
        self._labels = ("", "")
        self.fraction = 0.5
        self.zoom = 3
        # small enough to fit the tab in a short window: the image shrinks to the height it gets
        # (with a larger minimum the layout overflows and the bottom of the face is cut off)
        self.setMinimumSize(136, 136)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.SplitHCursor)

    def set_images(self, a: Optional[np.ndarray], b: Optional[np.ndarray], labels=("", "")) -> None:
        self._a = qimage_from_rgb(a) if a is not None else None
        self._b = qimage_from_rgb(b) if b is not None else None
        self._labels = labels
        self.update()

    def set_fraction(self, f: float) -> None:
        self.fraction = float(min(max(f, 0.0), 1.0))
        self.update()
        self.splitChanged.emit(self.fraction)

    def set_zoom(self, z: int) -> None:
        self.zoom = int(z)
        self.update()

    def _rect(self) -> QRectF:
        side = min(128 * self.zoom, self.width() - 8, self.height() - 8)
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().color(self.palette().ColorRole.Window))
        if self._a is None or self._b is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Choose two images to compare")
            return
        r = self._rect()
        x = r.left() + r.width() * self.fraction
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.save()
        p.setClipRect(QRectF(r.left(), r.top(), x - r.left(), r.height()))
        p.drawImage(r, self._a)
        p.restore()
        p.save()
        p.setClipRect(QRectF(x, r.top(), r.right() - x, r.height()))
        p.drawImage(r, self._b)
        p.restore()
        p.setPen(QPen(QColor(255, 200, 0), 2))
        p.drawLine(int(x), int(r.top()), int(x), int(r.bottom()))
        p.setPen(QColor(255, 255, 255))
        fm = p.fontMetrics()
        for text, left in ((self._labels[0], True), (self._labels[1], False)):
            tw = fm.horizontalAdvance(text) + 8
            box = QRectF(r.left() if left else r.right() - tw, r.top(), tw, fm.height() + 4)
            p.fillRect(box, QColor(0, 0, 0, 160))
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def _drag(self, e) -> None:
        r = self._rect()
        if r.width() > 0:
            self.set_fraction((e.position().x() - r.left()) / r.width())

    def mousePressEvent(self, e) -> None:
        self._drag(e)

    def mouseMoveEvent(self, e) -> None:
        if e.buttons() & Qt.MouseButton.LeftButton:
            self._drag(e)


class CompareView(QWidget):
    sampleSelected = Signal(str)
    favouriteToggled = Signal(str, bool)
    rerunRequested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.items: list[CompareItem] = []
        self.tiles: dict[str, Tile] = {}
        self.selected: Optional[str] = None
        self.zoom = 0
        self._applied_zoom = 2

        self.zoom_combo = QComboBox()
        for z in ZOOMS:
            self.zoom_combo.addItem(f"{z}× ({128 * z} px)" if z else "Fit", z)
        self.zoom_combo.setCurrentIndex(ZOOMS.index(self.zoom))
        self.zoom_combo.currentIndexChanged.connect(lambda _: self.set_zoom(self.zoom_combo.currentData()))
        self.header = QLabel("Select a face and press Run. Generated samples are plausible faces, "
                             "not recovered detail.")
        self.header.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(QLabel("Zoom"))
        top.addWidget(self.zoom_combo)

        # the uncertainty map: the overlay toggle, its opacity and the regions in words
        self.overlay_check = QCheckBox(OVERLAY_LABEL)
        self.overlay_check.setToolTip(OVERLAY_TOOLTIP)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(DEFAULT_OPACITY)
        self.opacity.setMinimumWidth(80)
        self.opacity.setMaximumWidth(140)
        self.opacity.setToolTip("Opacity of the map laid over the images (0: the image alone, 100: the map alone)")
        self.opacity_label = QLabel()
        self.opacity_label.setMinimumWidth(36)
        self.agreement = QLabel("")
        self.agreement.setTextFormat(Qt.TextFormat.RichText)
        self.agreement.setWordWrap(True)
        self.agreement.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.overlay_check.toggled.connect(self._apply_overlay)
        self.opacity.valueChanged.connect(self._apply_overlay)
        self.uncertainty_row = QWidget()
        urow = QHBoxLayout(self.uncertainty_row)
        urow.setContentsMargins(0, 0, 0, 0)
        urow.addWidget(self.overlay_check)
        urow.addWidget(QLabel("opacity"))
        urow.addWidget(self.opacity)
        urow.addWidget(self.opacity_label)
        urow.addStretch(1)
        self.uncertainty_row.hide()
        self.uncertainty = None  # the UncertaintyMap of the shown samples (None: K < 2 or no run)

        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.grid_host)

        self.split = SplitView()
        self.combo_a = QComboBox()
        self.combo_b = QComboBox()
        self.split_slider = QSlider(Qt.Orientation.Horizontal)
        self.split_slider.setRange(0, 1000)
        self.split_slider.setValue(500)
        self.split_slider.valueChanged.connect(lambda v: self.split.set_fraction(v / 1000))
        self.split.splitChanged.connect(self._sync_slider)
        self.combo_a.currentIndexChanged.connect(self._update_split)
        self.combo_b.currentIndexChanged.connect(self._update_split)
        split_host = QWidget()
        sl = QVBoxLayout(split_host)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Left"))
        pick.addWidget(self.combo_a, 1)
        pick.addWidget(QLabel("Right"))
        pick.addWidget(self.combo_b, 1)
        sl.addLayout(pick)
        sl.addWidget(self.split, 1)
        sl.addWidget(self.split_slider)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.scroll, "Side by side")
        self.tabs.addTab(split_host, "Before / after")
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.uncertainty_row)
        lay.addWidget(self.agreement)
        lay.addWidget(self.tabs, 1)
        self._update_opacity_label()

    # ---------------------------------------------------------------- content
    def set_items(self, items: list[CompareItem]) -> None:
        keep_a, keep_b = self.combo_a.currentData(), self.combo_b.currentData()
        if not self.samples():  # the first samples: the right side shows one, not what was kept
            keep_b = None
        self.items = list(items)
        for t in self.tiles.values():
            t.setParent(None)
            t.deleteLater()
        self.tiles = {}
        for it in self.items:
            tile = Tile(it, self._applied_zoom)
            tile.clicked.connect(self.select)
            tile.favouriteToggled.connect(self._on_fav)
            tile.rerunRequested.connect(self.rerunRequested)
            self.tiles[it.key] = tile
        self._show_uncertainty()
        self._reflow()
        for combo, keep, default in ((self.combo_a, keep_a, "bicubic"), (self.combo_b, keep_b, None)):
            combo.blockSignals(True)
            combo.clear()
            for it in self.items:
                combo.addItem(it.title + (f" (seed {it.seed})" if it.seed is not None else ""), it.key)
            want = keep if combo.findData(keep) >= 0 else default
            if want is None:
                want = next((it.key for it in self.items if it.kind == "sample"), None)
            idx = combo.findData(want)
            combo.setCurrentIndex(idx if idx >= 0 else 0)
            combo.blockSignals(False)
        self._update_split()
        if self.selected not in self.tiles:
            self.selected = None
            first = next((it.key for it in self.items if it.kind == "sample"), None)
            if first is not None:
                self.select(first)
        else:
            self.tiles[self.selected].set_selected(True)
            self._follow_selection()

    def _show_uncertainty(self) -> None:
        """The map of the shown samples (from its item): the toggle, the words, the overlays."""
        self.uncertainty = next((it.uncertainty for it in self.items if it.kind == "uncertainty"), None)
        n = len(self.samples())
        self.uncertainty_row.setVisible(n > 0)
        self.agreement.setVisible(n > 0)
        self.overlay_check.setEnabled(self.uncertainty is not None)
        self.opacity.setEnabled(self.uncertainty is not None)
        if self.uncertainty is not None:
            self.agreement.setText(LEGEND + html.escape(agreement_summary(self.uncertainty)))
            self.agreement.setToolTip(uncertainty_tooltip(self.uncertainty))
        else:
            self.agreement.setText(NO_MAP_ONE_SAMPLE if n == 1 else "")
            self.agreement.setToolTip("")
        self._apply_overlay()

    def overlay_on(self) -> bool:
        return self.overlay_check.isChecked() and self.uncertainty is not None

    def _update_opacity_label(self) -> None:
        self.opacity_label.setText(f"{self.opacity.value()} %")

    def _apply_overlay(self, *_) -> None:
        """Lay the map over (or take it off) the samples and the mean estimate, tiles and split."""
        self._update_opacity_label()
        std = self.uncertainty.std if self.overlay_on() else None
        for t in self.tiles.values():
            t.set_overlay(std, self.opacity.value() / 100)
        self._update_split()

    def shown_image(self, item: CompareItem) -> np.ndarray:
        """The 128×128 picture of ``item`` as shown now: with the map laid over it when the
        overlay is on and it is a sample or the mean estimate."""
        img = display_image(item)
        if self.overlay_on() and item.kind in OVERLAID_KINDS:
            img = overlay(img, self.uncertainty.std, self.opacity.value() / 100, DEFAULT_VMAX)
        return img

    def set_header(self, text: str) -> None:
        self.header.setText(text)

    def item(self, key: str) -> Optional[CompareItem]:
        return next((it for it in self.items if it.key == key), None)

    def samples(self) -> list[CompareItem]:
        return [it for it in self.items if it.kind == "sample"]

    def refresh_item(self, key: str) -> None:
        if key in self.tiles:
            self.tiles[key].refresh()

    def select(self, key: str) -> None:
        if key not in self.tiles:
            return
        if self.selected in self.tiles:
            self.tiles[self.selected].set_selected(False)
        self.selected = key
        self.tiles[key].set_selected(True)
        self._follow_selection()
        self.sampleSelected.emit(key)

    def _follow_selection(self) -> None:
        """Before / after shows the selected sample (right, "after") against the bicubic (left)."""
        it = self.item(self.selected) if self.selected else None
        if it is not None and it.kind == "sample":
            self.combo_b.setCurrentIndex(self.combo_b.findData(it.key))

    def set_zoom(self, z: int) -> None:
        """Zoom factor for every tile (the same for all); 0 fits the tiles into the view."""
        self.zoom = int(z)
        self._reflow()

    def effective_zoom(self) -> int:
        if self.zoom:
            return self.zoom
        vp = self.scroll.viewport()
        w, h, n = vp.width() - 8, vp.height() - 8, max(len(self.items), 1)
        for z in (4, 3, 2):
            cols = max(1, w // (128 * z + TILE_EXTRA_W))
            rows = -(-n // cols)
            if rows * (128 * z + TILE_EXTRA_H) <= h:
                return z
        return 1

    def _on_fav(self, key: str, on: bool) -> None:
        it = self.item(key)
        if it is not None:
            it.favourite = on
        self.favouriteToggled.emit(key, on)

    # ---------------------------------------------------------------- layout
    def _reflow(self) -> None:
        z = self.effective_zoom()
        if z != self._applied_zoom:
            self._applied_zoom = z
            for t in self.tiles.values():
                t.set_zoom(z)
            self.split.set_zoom(max(z, 2))
        while self.grid.count():
            self.grid.takeAt(0)
        tile_w = 128 * z + TILE_EXTRA_W
        cols = max(1, (self.scroll.viewport().width() - 8) // tile_w)
        # the width each tile gets: captions drop a unit only when even that is too narrow
        m = self.grid.contentsMargins()
        gap = max(self.grid.horizontalSpacing(), 0)
        cell = (self.scroll.viewport().width() - 8 - m.left() - m.right() - gap * (cols - 1)) // cols
        for i, it in enumerate(self.items):
            self.tiles[it.key].set_grid_width(max(cell, tile_w))
            self.grid.addWidget(self.tiles[it.key], i // cols, i % cols)
        # the scroll area does not hear that the grid's needed height changed (new zoom, new
        # tiles): unless told, it keeps the old height and squeezes the tiles, which then clip
        # their images and captions instead of scrolling
        QCoreApplication.postEvent(self.scroll, QEvent(QEvent.Type.LayoutRequest))

    def resizeEvent(self, e) -> None:
        super().resizeEvent(e)
        self._reflow()

    def _update_split(self, *_) -> None:
        a, b = self.item(self.combo_a.currentData()), self.item(self.combo_b.currentData())

        def label(it):
            if it is None:
                return ""
            return it.title + (" + map" if self.overlay_on() and it.kind in OVERLAID_KINDS else "")

        self.split.set_images(self.shown_image(a) if a else None, self.shown_image(b) if b else None,
                              (label(a), label(b)))

    def _sync_slider(self, f: float) -> None:
        v = int(round(f * 1000))
        if self.split_slider.value() != v:
            self.split_slider.blockSignals(True)
            self.split_slider.setValue(v)
            self.split_slider.blockSignals(False)
