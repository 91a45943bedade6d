"""``python -m scalebayes``: the same command line as the ``scalebayes`` console script (see :mod:`scalebayes.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
