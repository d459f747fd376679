"""``python -m trustyard`` is the ``trustyard`` command."""

import sys

from .cli import main

sys.exit(main())
