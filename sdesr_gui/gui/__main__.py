"""``python -m sdesr_gui.gui`` and the PyInstaller entry point."""

import sys

from sdesr_gui.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
