"""``python3 -m brokerpkg``: the ``brokerpkg`` command (see :mod:`brokerpkg.cli`)."""

import sys

from .cli import main

sys.exit(main())
