"""Defaults shared by the library and the command line, in one place.

mtr's defaults, shared by the monitor (:mod:`brokerpkg.mtr`) and the command line, the
further tries of a silent hop (:mod:`brokerpkg.waiting`), and
what ``brokerpkg setup`` installs (:mod:`brokerpkg.cli_setup`; brokerpkg(1), SETUP).
A module of its own, importing nothing, so that the command line can show them in its
help without importing the monitor (and asyncio) for every subcommand; for the same
reason the wire's limits and the names that ``--help`` shows live here too (their
modules, :mod:`brokerpkg.protocol`, :mod:`brokerpkg.errors`, :mod:`brokerpkg.locate` and
:mod:`brokerpkg.ssh`, take them from here).
"""

MTR_TIMEOUT = 10.0
"""mtr's default probe timeout (-Z)."""
MTR_GRACE = 5.0
"""mtr's default grace period after the last cycle (-G)."""
MTR_MAX_UNKNOWN = 5
"""mtr's documented default -U (its code uses 12)."""

SETUP_DEST = "/usr/local/bin"
"""Where ``brokerpkg setup`` installs the privileged helper (``--dest``): on PATH, and
outside the package, so that upgrading or reinstalling the package leaves it alone."""
SETUP_GROUP = "brokerpkg"
"""The system group the installed helper is set-group-id to (created when missing)."""
STATE_DIR = "/var/lib/brokerpkg"
"""The helper's shared state (one small file per user id for the per-user rate limit),
opened while the helper still holds its set-group-id."""
STATE_DIR_MODE = 0o2770
"""The state directory's mode, owned by root and SETUP_GROUP."""
HELPER_MODE_CAPABILITY = 0o2755
"""The installed helper's mode with the file capability cap_net_raw+ep (the default)."""
HELPER_MODE_SETUID = 0o6755
"""The installed helper's mode with ``--setuid``: setuid root and setgid SETUP_GROUP."""
RETRIES = 3
"""Further tries of a silent hop (trace, and the monitor's first cycle)."""
RETRIES_MAX = 10
"""The most further tries a silent hop may be given."""

HELPER_NAME = "brokerpkg-helper"
"""The helper's file name (on PATH, in the package, on a --from host)."""
ENVIRONMENT_VARIABLE = "BROKERPKG_HELPER"
"""The environment variable naming the helper to run (brokerpkg.locate)."""
SSH_ENVIRONMENT_VARIABLE = "BROKERPKG_SSH"
"""The environment variable naming the ssh command for --from (brokerpkg.ssh)."""
DEFAULT_SSH = ("ssh", "-T", "-o", "BatchMode=yes")
"""The ssh command when neither an argument nor BROKERPKG_SSH names one: no terminal
(the helper's protocol is a byte stream), never a password prompt."""

# The wire's limits (brokerpkg.protocol; man/brokerpkg-helper.8).
MAX_REQUEST_LENGTH = 4095
"""Longest request line, newline excluded; longer ones are answered command-buffer-overflow."""
PROTOCOLS = ("icmp", "udp", "tcp", "sctp")
MAX_TIMEOUT = 3600
MAX_FLOW = 65535
"""Largest flow number of the ``flow`` extension (flows are 0..MAX_FLOW)."""
IFNAMSIZ = 16
DEFAULT_CONCURRENCY = 50
"""Hosts multiping pings at once (icmplib's concurrent_tasks)."""
