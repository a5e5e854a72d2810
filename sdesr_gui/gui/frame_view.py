"""The frame view: the current frame, detected faces as boxes with probability, hand-drawn boxes.

Mouse: click a box to select it; drag anywhere to draw a box by hand; the wheel zooms around
the cursor (tiny faces in large frames), right- or middle-drag pans, double-click fits.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .imaging import qimage_from_rgb

Box = tuple[float, float, float, float]


class FrameView(QWidget):
    faceClicked = Signal(int)  # index into the boxes given to set_boxes
    boxDrawn = Signal(tuple)  # (x0, y0, x1, y1) in image pixels
    pointClicked = Signal(float, float)  # image pixels, in eye-click mode

    DRAG_THRESHOLD = 5  # widget pixels before a press becomes a drawn box
    MIN_BOX = 4.0  # image pixels

    def __init__(self, parent=None):
        super().__init__(parent)
        # tall enough that a click lands within about a pixel of a small frame's eye (boxes and
        # eye clicks are drawn here); when the window is short, the source panel scrolls instead
        self.setMinimumSize(240, 230)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self._image: Optional[QImage] = None
        self._size = (0, 0)
        self._boxes: list[tuple[Box, str]] = []
        self._manual: Optional[Box] = None
        self._selected: Optional[int] = None  # index in boxes, or -1 for the manual box
        self._eye_mode = False
        self._points: list[tuple[float, float]] = []
        self._zoom = 1.0
        self._centre: Optional[QPointF] = None  # image point at the view centre when zoomed
        self._press: Optional[QPointF] = None
        self._drag: Optional[QPointF] = None
        self._pan_from: Optional[tuple[QPointF, QPointF]] = None
        self._message = "Open an image or video (File ▸ Open, or drop a file here)."
        self.setToolTip("Click a box to select a face; drag to draw a box by hand.\n"
                        "Wheel: zoom · right-drag: pan · double-click: fit")

    # ---------------------------------------------------------------- content
    def set_image(self, rgb: Optional[np.ndarray], keep_view: bool = False) -> None:
        if rgb is None:
            self._image, self._size = None, (0, 0)
        else:
            new_size = (int(rgb.shape[1]), int(rgb.shape[0]))
            if new_size != self._size or not keep_view:
                self._zoom, self._centre = 1.0, None
            self._image, self._size = qimage_from_rgb(rgb), new_size
        self.update()

    def set_message(self, text: str) -> None:
        self._message = text
        self.update()

    def set_boxes(self, boxes: Sequence[tuple[Box, str]]) -> None:
        """Detected faces: (box, label) each."""
        self._boxes = [(tuple(float(v) for v in b), str(label)) for b, label in boxes]
        self.update()

    def set_manual_box(self, box: Optional[Box]) -> None:
        self._manual = tuple(float(v) for v in box) if box is not None else None
        self.update()

    def set_eye_mode(self, on: bool) -> None:
        """Clicks give image points (eye positions) instead of selecting boxes."""
        self._eye_mode = bool(on)
        self.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    def set_points(self, points) -> None:
        """Eye clicks to mark: [(x, y), ...] in image pixels."""
        self._points = [(float(x), float(y)) for x, y in points]
        self.update()

    def set_selected(self, index: Optional[int]) -> None:
        """Index of the selected detected box, -1 for the manual box, None for neither."""
        self._selected = index
        self.update()

    # ---------------------------------------------------------------- geometry
    def image_rect(self) -> QRectF:
        """Where the image is drawn, in widget coordinates."""
        w, h = self._size
        if not w or not h:
            return QRectF()
        fit = min(self.width() / w, self.height() / h)
        s = fit * self._zoom
        dw, dh = w * s, h * s
        if self._centre is None or self._zoom <= 1.0:
            return QRectF((self.width() - dw) / 2, (self.height() - dh) / 2, dw, dh)
        x = self.width() / 2 - self._centre.x() * s
        y = self.height() / 2 - self._centre.y() * s
        return QRectF(x, y, dw, dh)

    def widget_to_image(self, p: QPointF) -> QPointF:
        r = self.image_rect()
        if r.isEmpty():
            return QPointF()
        s = r.width() / self._size[0]
        return QPointF((p.x() - r.x()) / s, (p.y() - r.y()) / s)

    def image_to_widget(self, p: QPointF) -> QPointF:
        r = self.image_rect()
        s = r.width() / self._size[0] if self._size[0] else 1.0
        return QPointF(r.x() + p.x() * s, r.y() + p.y() * s)

    def _box_rect(self, box: Box) -> QRectF:
        a = self.image_to_widget(QPointF(box[0], box[1]))
        b = self.image_to_widget(QPointF(box[2], box[3]))
        return QRectF(a, b).normalized()

    # ---------------------------------------------------------------- painting
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(pal.ColorRole.Base).darker(115))
        if self._image is None:
            p.setPen(pal.color(pal.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
            return
        r = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, r.width() < self._size[0])
        p.drawImage(r, self._image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        font.setBold(True)
        p.setFont(font)
        for i, (box, label) in enumerate(self._boxes):
            self._draw_box(p, self._box_rect(box), label, selected=(i == self._selected),
                           colour=QColor(60, 200, 90))
        if self._manual is not None:
            self._draw_box(p, self._box_rect(self._manual), "hand-drawn", selected=(self._selected == -1),
                           colour=QColor(230, 80, 220), dashed=True)
        for x, y in self._points:
            c = self.image_to_widget(QPointF(x, y))
            p.setPen(QPen(QColor(0, 220, 255), 2))
            p.drawEllipse(c, 5, 5)
            p.drawLine(QPointF(c.x() - 9, c.y()), QPointF(c.x() + 9, c.y()))
            p.drawLine(QPointF(c.x(), c.y() - 9), QPointF(c.x(), c.y() + 9))
        if self._press is not None and self._drag is not None:
            pen = QPen(QColor(255, 200, 0), 1.5, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRectF(self._press, self._drag).normalized())

    def _draw_box(self, p: QPainter, rect: QRectF, label: str, selected: bool, colour: QColor,
                  dashed: bool = False) -> None:
        c = QColor(255, 170, 0) if selected else colour
        pen = QPen(c, 3.0 if selected else 1.6, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(rect)
        fm = p.fontMetrics()
        tw, th = fm.horizontalAdvance(label) + 8, fm.height() + 2
        tag = QRectF(rect.left(), rect.top() - th, tw, th)
        if tag.top() < 0:
            tag.moveTop(rect.bottom())
        p.fillRect(tag, c)
        p.setPen(QColor(0, 0, 0))
        p.drawText(tag, Qt.AlignmentFlag.AlignCenter, label)

    # ---------------------------------------------------------------- mouse
    def _hit(self, p: QPointF) -> Optional[int]:
        best, best_area = None, None
        for i, (box, _) in enumerate(self._boxes):
            r = self._box_rect(box)
            if r.contains(p):
                area = r.width() * r.height()
                if best_area is None or area < best_area:
                    best, best_area = i, area
        if self._manual is not None and self._box_rect(self._manual).contains(p):
            area = self._box_rect(self._manual).width() * self._box_rect(self._manual).height()
            if best_area is None or area < best_area:
                best = -1
        return best

    def mousePressEvent(self, e) -> None:
        if self._image is None:
            return
        pos = e.position()
        if e.button() in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self._pan_from = (pos, self._centre or QPointF(self._size[0] / 2, self._size[1] / 2))
        elif e.button() == Qt.MouseButton.LeftButton:
            self._press, self._drag = pos, None

    def mouseMoveEvent(self, e) -> None:
        pos = e.position()
        if self._pan_from is not None:
            start, c0 = self._pan_from
            s = self.image_rect().width() / self._size[0]
            self._centre = QPointF(c0.x() - (pos.x() - start.x()) / s, c0.y() - (pos.y() - start.y()) / s)
            self.update()
        elif self._press is not None:
            if self._drag is not None or (pos - self._press).manhattanLength() >= self.DRAG_THRESHOLD:
                self._drag = pos
                self.update()

    def mouseReleaseEvent(self, e) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            return
        if self._press is None:
            return
        press, drag = self._press, self._drag
        self._press = self._drag = None
        self.update()
        if drag is None and self._eye_mode:
            q = self.widget_to_image(press)
            if 0 <= q.x() <= self._size[0] and 0 <= q.y() <= self._size[1]:
                self.pointClicked.emit(q.x(), q.y())
            return
        if drag is None:
            hit = self._hit(press)
            if hit is not None:
                self.faceClicked.emit(hit)
            return
        a, b = self.widget_to_image(press), self.widget_to_image(drag)
        w, h = self._size
        x0, x1 = sorted((min(max(a.x(), 0.0), w), min(max(b.x(), 0.0), w)))
        y0, y1 = sorted((min(max(a.y(), 0.0), h), min(max(b.y(), 0.0), h)))
        if x1 - x0 >= self.MIN_BOX and y1 - y0 >= self.MIN_BOX:
            self.boxDrawn.emit((x0, y0, x1, y1))

    def mouseDoubleClickEvent(self, e) -> None:
        self._zoom, self._centre = 1.0, None
        self.update()

    def wheelEvent(self, e) -> None:
        if self._image is None:
            return
        steps = e.angleDelta().y() / 120.0
        if not steps:
            return
        anchor = self.widget_to_image(e.position())
        old = self.image_rect()
        self._zoom = float(min(32.0, max(1.0, self._zoom * (1.25 ** steps))))
        if self._zoom <= 1.0:
            self._centre = None
        else:
            # keep the image point under the cursor where it is
            fit = min(self.width() / self._size[0], self.height() / self._size[1])
            s = fit * self._zoom
            cx = anchor.x() - (e.position().x() - self.width() / 2) / s
            cy = anchor.y() - (e.position().y() - self.height() / 2) / s
            self._centre = QPointF(cx, cy)
        if old != self.image_rect():
            self.update()
