"""Entry point of the desktop app: ``sdesr-gui [INPUT] [--screenshot PNG [--frame N] [--run K] [--overlay]
[--before-after]]``.

``--screenshot PNG`` opens the window at 1400x900 with INPUT loaded and its first face
selected (with ``--run K``, after a K-sample run; ``--overlay`` then shows the disagreement
map over the images), saves the window as PNG and exits (exit code 2 with one sentence on stderr if the
input cannot be opened). It uses fresh settings, so the picture does not depend on (or change)
the analyst's saved layout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication

from .. import __version__
from .main_window import MainWindow

__all__ = ["MainWindow", "main", "make_app"]

SCREENSHOT_SIZE = (1400, 900)
SCREENSHOT_TIMEOUT_MS = 120_000


def make_app(argv=None) -> QApplication:
    from .theme import apply_theme

    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv or sys.argv[:1]))
    app.setOrganizationName("SDE-SR Studio")
    app.setApplicationName("sdesr-gui")
    app.setApplicationVersion(__version__)
    apply_theme(app)
    return app


def take_screenshot(win: MainWindow, out: Path, input_path: str | None, app: QApplication,
                    run_samples: int = 0, overlay: bool = False, frame: int = 0,
                    before_after: bool = False) -> int:
    """Show ``win`` at the screenshot size, wait for the first face, save ``out``; exit code.
    ``frame``: of a video, the frame whose first face is taken; ``run_samples`` > 0: first run
    that many samples (seed 0, the default model and sampler) and wait for them; ``overlay``:
    then lay the disagreement map over the images; ``before_after``: show that tab."""
    state = {"done": False, "rc": 1}
    loop = QEventLoop()  # a local loop: app.exec()/quit() would end the application for good
    win.resize(*SCREENSHOT_SIZE)
    win.show()

    def snap() -> None:
        if state["done"]:
            return
        state["done"] = True
        app.processEvents()
        win.resize(*SCREENSHOT_SIZE)
        app.processEvents()
        pm = win.grab()
        out.parent.mkdir(parents=True, exist_ok=True)
        state["rc"] = 0 if pm.save(str(out), "PNG") else 1
        if state["rc"]:
            print(f"sdesr-gui: error: the screenshot could not be written to {out}", file=sys.stderr)
        loop.quit()

    errors: list[str] = []
    open_errors: list[str] = []
    if input_path:
        sp = win.source_panel

        def open_failed(msg: str) -> None:  # the file cannot be decoded: no screenshot
            open_errors.append(msg)
            state["done"] = True
            loop.quit()

        def failed(msg: str) -> None:  # e.g. detection failed: save what is shown, report it
            errors.append(msg)
            QTimer.singleShot(400, snap)

        sp.openFailed.connect(open_failed)
        sp.opened.connect(lambda _: sp.errorOccurred.connect(failed))  # errors once the file is open

        def detected(*_) -> None:
            if frame and sp.frame_index != frame and 0 < frame < sp.frame_count:
                sp.set_frame(frame)  # its faces are detected next, and this runs again
                return
            if not run_samples:
                QTimer.singleShot(400, snap)
                return
            win.controls.samples.setValue(int(run_samples))
            win.controls.seed.setValue(0)
            if not win.start_run():
                failed(win.last_error or "the run could not start")

        def ran() -> None:
            if overlay:
                win.compare.overlay_check.setChecked(True)
            if before_after:
                win.compare.tabs.setCurrentIndex(1)
            # no gallery is loaded: give its room to the comparison, which the picture is about
            win.resizeDocks([win.gallery_dock], [190], Qt.Orientation.Vertical)
            QTimer.singleShot(400, snap)

        if run_samples:
            win.runFinished.connect(ran)
            win.runFailed.connect(failed)
        sp.detectionFinished.connect(detected)
        if not win.open_path(input_path):
            print(f"sdesr-gui: error: {win.last_error}", file=sys.stderr)
            return 2
        QTimer.singleShot(SCREENSHOT_TIMEOUT_MS * (5 if run_samples else 1), snap)  # a run takes longer
    else:
        QTimer.singleShot(500, snap)
    if not state["done"]:
        loop.exec()
    win.shutdown()
    if open_errors:
        print(f"sdesr-gui: error: {open_errors[0]}", file=sys.stderr)
        return 2
    if errors:
        print(f"sdesr-gui: error: {errors[0]}", file=sys.stderr)
        return 1
    return state["rc"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sdesr-gui", description="SDE-SR Studio: face super-resolution for analysts")
    ap.add_argument("input", nargs="?", help="an image or video to open")
    ap.add_argument("--screenshot", metavar="PNG",
                    help="open the window (1400x900) with INPUT and its first face selected, save it as PNG, exit")
    ap.add_argument("--run", type=int, default=0, metavar="K",
                    help="with --screenshot: first run K samples (seed 0, default model and sampler)")
    ap.add_argument("--overlay", action="store_true",
                    help="with --screenshot --run: lay the disagreement map over the images")
    ap.add_argument("--frame", type=int, default=0, metavar="N",
                    help="with --screenshot: take the first face of video frame N")
    ap.add_argument("--before-after", action="store_true",
                    help="with --screenshot --run: show the Before / after tab")
    ap.add_argument("--version", action="version", version=f"sdesr-gui {__version__}")
    args = ap.parse_args(argv)
    if (args.run or args.frame) and not args.screenshot or args.run < 0 or args.frame < 0:
        ap.error("--run K and --frame N need --screenshot, and K, N >= 0")
    app = make_app()
    if args.screenshot:
        with tempfile.TemporaryDirectory() as tmp:
            settings = QSettings(str(Path(tmp) / "screenshot.ini"), QSettings.Format.IniFormat)
            win = MainWindow(settings=settings, restore=False)
            rc = take_screenshot(win, Path(args.screenshot), args.input, app, args.run, args.overlay,
                                 args.frame, args.before_after)
            win.deleteLater()
            return rc
    win = MainWindow()
    win.show()
    if args.input:
        QTimer.singleShot(0, lambda: win.open_path(args.input))
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
