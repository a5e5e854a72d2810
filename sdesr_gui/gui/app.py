"""Entry point of the desktop app (``sdesr-gui``).

The full analyst workspace arrives with the desktop-app issue; this is the plain main window.
"""

from __future__ import annotations

import argparse
import sys

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

from .. import __version__


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(f"SDE-SR Studio {__version__}")
        label = QLabel("SDE-SR Studio\n\nScore-based SDE face super-resolution.\n"
                       "Use the `sdesr` command for enhancement until the workspace lands.")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setCentralWidget(label)
        self.resize(1000, 700)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sdesr-gui", description="SDE-SR Studio desktop app")
    ap.add_argument("input", nargs="?", help="image or video to open")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow()
    win.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
