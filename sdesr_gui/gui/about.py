"""About box: versions, the compute devices and the model card (weights/README.md)."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTabWidget, QTextBrowser, QVBoxLayout

from .. import __version__


def versions_html() -> str:
    from ..core.provenance import versions

    import PySide6

    v = versions()
    v["PySide6"] = PySide6.__version__
    try:
        import torch

        v["CUDA"] = (f"{torch.version.cuda} ({torch.cuda.get_device_name(0)})"
                     if torch.cuda.is_available() else "not available")
    except Exception:  # noqa: BLE001
        pass
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(str(val))}</td></tr>"
                   for k, val in v.items())
    return (f"<h2>SDE-SR Studio {html.escape(__version__)}</h2>"
            "<p>Face super-resolution (16×16 or 8×8 → 128×128) with a score-based SDE diffusion model "
            "(SDE-SR), soft-biometric attribute guidance (SRDG) and gallery matching.</p>"
            "<p><b>Every generated face is a plausible reconstruction, not recovered detail: "
            "an investigative lead, never an identification.</b></p>"
            f"<table cellpadding='3'>{rows}</table>")


def model_card_markdown() -> str:
    from ..core.enhance import weights_dir

    p = weights_dir() / "README.md"
    try:
        return p.read_text(encoding="utf-8")
    except OSError:
        return f"No model card was found ({p})."


class AboutDialog(QDialog):
    def __init__(self, parent=None, tab: int = 0):
        super().__init__(parent)
        self.setWindowTitle("About SDE-SR Studio")
        about = QTextBrowser()
        about.setHtml(versions_html())
        card = QTextBrowser()
        card.setOpenExternalLinks(True)
        card.setMarkdown(model_card_markdown())
        self.tabs = QTabWidget()
        self.tabs.addTab(about, "About")
        self.tabs.addTab(card, "Model card")
        self.tabs.setCurrentIndex(tab)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs)
        lay.addWidget(buttons)
        self.resize(720, 560)
