"""``python -m helioforge.cli``."""

import sys

from helioforge.cli import app

sys.exit(app())
