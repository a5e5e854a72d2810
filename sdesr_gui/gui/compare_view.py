"""Comparison view: LR (nearest), bicubic, the mean estimate and every sample side by side at
one zoom, a before/after split between any two, per-image metrics, favourites and re-run from
a seed."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
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

from ..core.session import ResultItem
from .imaging import nearest_upscale, pixmap_from_rgb, qimage_from_rgb

#: what the mean estimate's tile says when hovered: the most accurate single image, not a sample
MEAN_TOOLTIP = ("Mean estimate: the model's posterior-mean estimate of this face (one network evaluation, "
                "the same image every time). It is the most accurate single image (highest PSNR / SSIM) but "
                "blurrier than a sample: it invents no detail. It is an estimate, not a sample.")
ZOOMS = (0, 1, 2, 3, 4)  # 0 = fit: the largest zoom at which every tile is visible
TILE_EXTRA_W, TILE_EXTRA_H = 40, 112  # tile chrome around the image (title, metrics, buttons)


#: The images the view shows are the session's (Qt-free) result items.
CompareItem = ResultItem


def display_image(item: CompareItem) -> np.ndarray:
    """The 128×128 picture of an item (the 16×16 LR nearest-upscaled)."""
    return nearest_upscale(item.image, 128) if item.image.shape[0] != 128 else item.image


def metrics_text(m: dict[str, float]) -> str:
    parts = []
    if "consistency" in m:
        parts.append(f"consistency {m['consistency']:.2f}")
    if "psnr" in m:
        parts.append(f"PSNR {m['psnr']:.2f} dB")
    if "ssim" in m:
        parts.append(f"SSIM {m['ssim']:.3f}")
    if "cs" in m:
        parts.append(f"CS {m['cs']:.3f}")
    return "\n".join(parts)


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
        self.image.setPixmap(pixmap_from_rgb(display_image(self.item), 128 * zoom))

    def refresh(self) -> None:
        tag = ""
        if self.item.generated:
            tag = "<span style='background:#b3261e;color:white'>&nbsp;GENERATED&nbsp;</span>"
        if self.item.kind == "mean":
            tag += " <span style='background:#5c6bc0;color:white'>&nbsp;ESTIMATE&nbsp;</span>"
        seed = f" · seed {self.item.seed}" if self.item.seed is not None else ""
        self.title.setText(f"<b>{self.item.title}</b>{seed}<br>{tag}" if tag else f"<b>{self.item.title}</b>{seed}")
        text = metrics_text(self.item.metrics)
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
        self.setMinimumSize(256, 256)
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
        lay.addWidget(self.tabs, 1)

    # ---------------------------------------------------------------- content
    def set_items(self, items: list[CompareItem]) -> None:
        keep_a, keep_b = self.combo_a.currentData(), self.combo_b.currentData()
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
        self.sampleSelected.emit(key)

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
        for i, it in enumerate(self.items):
            self.grid.addWidget(self.tiles[it.key], i // cols, i % cols)

    def resizeEvent(self, e) -> None:
        super().resizeEvent(e)
        self._reflow()

    def _update_split(self, *_) -> None:
        a, b = self.item(self.combo_a.currentData()), self.item(self.combo_b.currentData())
        self.split.set_images(display_image(a) if a else None, display_image(b) if b else None,
                              (a.title if a else "", b.title if b else ""))

    def _sync_slider(self, f: float) -> None:
        v = int(round(f * 1000))
        if self.split_slider.value() != v:
            self.split_slider.blockSignals(True)
            self.split_slider.setValue(v)
            self.split_slider.blockSignals(False)
