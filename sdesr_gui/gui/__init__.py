"""PySide6 user interface over :mod:`sdesr_gui.core` (all Qt lives here)."""
