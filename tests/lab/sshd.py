"""A real OpenSSH server in a lab namespace, and the client side that reaches it.

:class:`SshKeys` makes key pairs and a client configuration (``ssh -F``) in a temporary
directory: no known-hosts file is read or written, no password is ever asked, and only
the identity given with ``-i`` is offered.  :class:`SshServer` runs ``/usr/sbin/sshd -D
-e -f CONFIG`` inside a node, listening on one of the node's lab addresses, with its own
host key, its own ``authorized_keys`` (``UsePAM no``, ``StrictModes no``), its own
``HOME``, optionally its own host name (a UTS namespace of its own), ``/etc/hosts`` and
``/etc/resolv.conf`` (``ip netns exec`` bind-mounts ``/etc/netns/NS/FILE`` over
``/etc/FILE`` for the server and every session it starts).  ``start`` returns once sshd
said it listens; the lab's ``close`` (or ``stop``) kills it and removes those files.
Example::

    keys = SshKeys(tmp_path)
    server = SshServer(lab, "vantage", "198.18.1.2", keys, host_name="vantage-a",
                       hosts={"198.18.4.2": "target"})
    server.start()
    ssh = keys.command(lab, "client")   # ip netns exec CLIENT ssh -F ... -i KEY
    lab.run("client", [*keys.ssh_words(), "root@198.18.1.2", "uname -n"])

Needs root, openssh-server and openssh-client.  ``/run/sshd`` (sshd's privilege
separation directory) is created when missing and left in place, as the Debian
package's service does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .netns import LabError, namespace_pids

if TYPE_CHECKING:
    from .topology import Lab, NodeRef

SSHD = "/usr/sbin/sshd"
"""sshd re-executes itself for every connection, so it must be started by absolute path."""
PRIVSEP_DIR = Path("/run/sshd")
NETNS_ETC = Path("/etc/netns")
START_TIMEOUT = 20.0
NOBODY = 65534


def _keygen(path: Path, comment: str) -> Path:
    """Make an ed25519 key pair at ``path`` (and ``path.pub``); return ``path``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


class SshKeys:
    """Client key pairs and the client configuration, in ``directory``.

    ``user`` is the key servers authorize (:meth:`SshServer.authorize` with no key),
    ``stranger`` one no server authorizes, ``nobody`` the key servers authorize with a
    forced command that runs the requested command as the user nobody.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.user = _keygen(self.directory / "id_user", "brokerpkg-test-user")
        self.stranger = _keygen(self.directory / "id_stranger", "brokerpkg-test-stranger")
        self.nobody = _keygen(self.directory / "id_nobody", "brokerpkg-test-nobody")
        self.config = self.directory / "ssh_config"
        self.config.write_text(
            "Host *\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    BatchMode yes\n"
            "    IdentitiesOnly yes\n"
            "    PasswordAuthentication no\n"
            "    ConnectTimeout 10\n"
            "    LogLevel ERROR\n"
        )

    def ssh_words(self, identity: Path | None = None) -> list[str]:
        """``ssh -T -F CONFIG -i IDENTITY`` (default identity: ``user``)."""
        return ["ssh", "-T", "-F", str(self.config), "-i", str(identity or self.user)]

    def command(self, lab: Lab, node: NodeRef, identity: Path | None = None) -> list[str]:
        """The ssh command run inside ``node`` (``ip netns exec NS ssh ...``), for a
        process in the root namespace that must reach a lab address."""
        return lab.exec_argv(node, self.ssh_words(identity))

    def environment_value(self, identity: Path | None = None) -> str:
        """:meth:`ssh_words` as one shell-quoted string (for BROKERPKG_SSH)."""
        return shlex.join(self.ssh_words(identity))

    def alias(self, name: str, address: str, user: str = "root") -> None:
        """Let the client configuration take ``name`` for ``user@address`` (a ``Host``
        block with ``HostName`` and ``User``), as operators name their hosts there."""
        with self.config.open("a") as config:
            config.write(f"Host {name}\n    HostName {address}\n    User {user}\n")


class SshServer:
    """sshd in ``node``, listening on ``address`` port 22 (see the module docstring).

    ``hosts`` (address -> names) becomes the node's ``/etc/hosts`` (with localhost),
    ``resolv_conf`` its ``/etc/resolv.conf``, ``host_name`` its host name (``uname
    -n``), all for sshd and every session.
    """

    def __init__(
        self,
        lab: Lab,
        node: NodeRef,
        address: str,
        keys: SshKeys,
        *,
        host_name: str | None = None,
        hosts: Mapping[str, str] | None = None,
        resolv_conf: str | None = None,
    ) -> None:
        self.lab = lab
        self.node = lab.node(node)
        self.address = address
        self.keys = keys
        self.host_name = host_name
        self.hosts = dict(hosts or {})
        self.resolv_conf = resolv_conf
        self.directory = keys.directory / f"sshd-{self.node.role}"
        self.directory.mkdir(exist_ok=True)
        self.host_key = _keygen(self.directory / "host_key", f"host {self.node.role}")
        self.authorized_keys = self.directory / "authorized_keys"
        self.authorized_keys.write_text("")
        self.config = self.directory / "sshd_config"
        self.home = self.directory / "home"
        self.home.mkdir(exist_ok=True)
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._log_thread: threading.Thread | None = None
        self._etc: Path | None = None

    def authorize(self, key: Path | None = None, options: str = "") -> None:
        """Add ``key``'s public half (default the user key) to authorized_keys, with
        authorized_keys ``options`` (e.g. ``command="..."``)."""
        public = Path(f"{key or self.keys.user}.pub").read_text().strip()
        with self.authorized_keys.open("a") as keys:
            keys.write(f"{options} {public}\n" if options else f"{public}\n")

    def authorize_as_nobody(self) -> None:
        """Authorize the ``nobody`` key with a forced command that runs the requested
        command (``$SSH_ORIGINAL_COMMAND``) as the user nobody, without privilege."""
        run_as_nobody = (
            f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
            '/bin/sh -c \\"$SSH_ORIGINAL_COMMAND\\"'
        )
        self.authorize(self.keys.nobody, f'command="{run_as_nobody}",restrict')

    def _write_config(self) -> None:
        self.config.write_text(
            f"ListenAddress {self.address}\n"
            "Port 22\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PidFile none\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            # a home of its own: the machine's root may have shell start-up files (bash
            # reads ~/.bashrc for ssh commands) that would run in every session
            f"SetEnv HOME={self.home}\n"
            "LogLevel VERBOSE\n"
        )

    def _write_etc(self) -> None:
        """/etc/netns/NS/hosts and resolv.conf, which ``ip netns exec NS`` mounts over
        /etc/hosts and /etc/resolv.conf."""
        if not self.hosts and self.resolv_conf is None:
            return
        etc = NETNS_ETC / self.node.ns
        etc.mkdir(parents=True, exist_ok=True)
        self._etc = etc
        if self.hosts:
            lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
            lines += [f"{address} {names}" for address, names in self.hosts.items()]
            (etc / "hosts").write_text("\n".join(lines) + "\n")
        if self.resolv_conf is not None:
            (etc / "resolv.conf").write_text(self.resolv_conf)

    def start(self) -> SshServer:
        """Start sshd and wait until it listens.

        Raises:
            LabError: sshd exited or did not say it listens within START_TIMEOUT.
        """
        self._write_config()
        self._write_etc()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.lab.register_closer(self.stop)
        if self.host_name is not None:
            argv = [
                "unshare",
                "--uts",
                "sh",
                "-c",
                'hostname "$0" && exec "$1" -D -e -f "$2"',
                self.host_name,
                SSHD,
                str(self.config),
            ]
        else:
            argv = [SSHD, "-D", "-e", "-f", str(self.config)]
        self.process = self.lab.popen(
            self.node, argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        self._log_thread = threading.Thread(target=self._read_log, args=(ready,), daemon=True)
        self._log_thread.start()
        if not ready.wait(START_TIMEOUT) or self.process.poll() is not None:
            self.stop()
            raise LabError(f"sshd in {self.node.role} did not start: {self.log[-5:]}")
        return self

    def _read_log(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            if "Server listening on" in line:
                ready.set()
        ready.set()  # sshd exited: start() sees it

    def _processes(self) -> list[tuple[int, int, str]]:
        """(pid, parent pid, command name) of every process in the node's namespace."""
        found = []
        for pid in namespace_pids(self.node.ns):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            found.append((pid, parent, name))
        return found

    def listener_pid(self) -> int:
        """The pid of the listening sshd (the sshd whose parent is not an sshd).

        Raises:
            LabError: it is not running.
        """
        return self._listener(self._processes())

    def _listener(self, processes: list[tuple[int, int, str]]) -> int:
        sshds = {pid for pid, _, name in processes if name == "sshd"}
        for pid, parent, name in processes:
            if name == "sshd" and parent not in sshds:
                return pid
        raise LabError(f"no sshd listening in {self.node.role}")

    def session_pids(self) -> list[int]:
        """The pids of the sshd processes serving connections (children of the listener).

        Raises:
            LabError: sshd is not running.
        """
        processes = self._processes()
        listener = self._listener(processes)
        return [pid for pid, parent, name in processes if parent == listener and name == "sshd"]

    def wait_for_process(self, name: str, timeout: float = 30.0) -> int:
        """Wait until a process whose command name is ``name`` runs in the node (a
        helper started by a session); return its pid.

        Raises:
            LabError: none did within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for pid, _, command in self._processes():
                if command == name:
                    return pid
            if time.monotonic() > deadline:
                raise LabError(f"no process {name} in {self.node.role} after {timeout} s")
            time.sleep(0.05)

    def drop_sessions(self) -> list[int]:
        """SIGKILL every sshd process serving a connection (each by pid): the kernel
        closes their sockets, so each client sees its connection closed at once.
        Returns the pids killed."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def wait_no_sessions(self, timeout: float = 10.0) -> None:
        """Wait until no connection is being served (sessions closed by their clients).

        Raises:
            LabError: sessions are still there after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.session_pids():
            if time.monotonic() > deadline:
                raise LabError(f"sshd sessions still open in {self.node.role}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill sshd and its sessions (by pid), remove the hosts file; idempotent."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(LabError):
                for pid in self.session_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(LabError, ProcessLookupError):
                os.kill(self.listener_pid(), signal.SIGTERM)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log_thread is not None:
            self._log_thread.join(5)
        if self._etc is not None:
            for name in ("hosts", "resolv.conf"):
                with contextlib.suppress(FileNotFoundError):
                    (self._etc / name).unlink()
            with contextlib.suppress(OSError):
                self._etc.rmdir()
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()  # only when empty: other labs' files stay
            self._etc = None


def remote_command(path: str, environment: Mapping[str, str]) -> str:
    """``path`` as the command line ssh runs on the server, with ``environment`` set
    there (ssh passes none of the client's variables)."""
    if not environment:
        return path
    return shlex.join(["env", *[f"{name}={value}" for name, value in environment.items()], path])


def sshd_available() -> tuple[bool, str]:
    """(True, "") if sshd, ssh and ssh-keygen are installed, else (False, what is missing)."""
    missing = [p for p in (SSHD,) if not os.access(p, os.X_OK)]
    missing += [p for p in ("ssh", "ssh-keygen") if shutil.which(p) is None]
    if missing:
        return (
            False,
            f"missing {', '.join(missing)} (apt-get install openssh-server openssh-client)",
        )
    return True, ""
