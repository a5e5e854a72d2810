"""Follow the system's light or dark colour scheme (Fusion style with a matching palette)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette


def dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(37, 39, 44), QColor(27, 29, 33), QColor(225, 228, 232)
    accent = QColor(80, 150, 240)
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        p.setColor(group, QPalette.ColorRole.Window, window)
        p.setColor(group, QPalette.ColorRole.WindowText, text)
        p.setColor(group, QPalette.ColorRole.Base, base)
        p.setColor(group, QPalette.ColorRole.AlternateBase, window)
        p.setColor(group, QPalette.ColorRole.ToolTipBase, window)
        p.setColor(group, QPalette.ColorRole.ToolTipText, text)
        p.setColor(group, QPalette.ColorRole.Text, text)
        p.setColor(group, QPalette.ColorRole.Button, QColor(48, 51, 57))
        p.setColor(group, QPalette.ColorRole.ButtonText, text)
        p.setColor(group, QPalette.ColorRole.BrightText, QColor(255, 90, 90))
        p.setColor(group, QPalette.ColorRole.Highlight, accent)
        p.setColor(group, QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
        p.setColor(group, QPalette.ColorRole.Link, accent.lighter(120))
        p.setColor(group, QPalette.ColorRole.PlaceholderText, QColor(140, 145, 152))
    grey = QColor(120, 124, 130)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, grey)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Base, window)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Button, QColor(42, 44, 49))
    return p


def is_dark(app: QGuiApplication) -> bool:
    return app.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app) -> None:
    """Fusion style; a dark palette when the system is dark, Fusion's light one otherwise.

    Re-applied whenever the system scheme changes.
    """
    app.setStyle("Fusion")

    def update(*_):
        if is_dark(app):
            app.setPalette(dark_palette())
        else:
            app.setPalette(app.style().standardPalette())

    update()
    if not getattr(app, "_sdesr_theme_hooked", False):
        app.styleHints().colorSchemeChanged.connect(update)
        app._sdesr_theme_hooked = True
