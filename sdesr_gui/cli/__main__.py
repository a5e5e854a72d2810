"""``python -m sdesr_gui.cli``: the ``sdesr`` command."""

import sys

from . import main

sys.exit(main())
