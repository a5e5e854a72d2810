"""core/ stays Qt-free: importing every core module must not load PySide6."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import sdesr_gui.core as core


def test_core_never_imports_qt():
    names = [m.name for m in pkgutil.walk_packages(core.__path__, "sdesr_gui.core.")]
    assert "sdesr_gui.core.sampling" in names and "sdesr_gui.core.models.checkpoint" in names
    code = ("import sys, importlib\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6')]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in Path(core.__path__[0]).rglob("*.py"):
        assert "PySide6" not in path.read_text(), path
