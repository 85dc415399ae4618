"""``python -m lightning_lab`` is the ``lightning-lab`` command."""

import sys

from lightning_lab.cli import main

sys.exit(main())
