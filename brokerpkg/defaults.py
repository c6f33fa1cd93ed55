"""mtr's defaults, shared by the monitor (:mod:`brokerpkg.mtr`) and the command line,
and the further tries of a silent hop (:mod:`brokerpkg.waiting`).

A module of its own, importing nothing, so that the command line can show them in its
help without importing the monitor (and asyncio) for every subcommand.
"""

MTR_TIMEOUT = 10.0
"""mtr's default probe timeout (-Z)."""
MTR_GRACE = 5.0
"""mtr's default grace period after the last cycle (-G)."""
MTR_MAX_UNKNOWN = 5
"""mtr's documented default -U (its code uses 12)."""
RETRIES = 3
"""Further tries of a silent hop (trace, and the monitor's first cycle)."""
