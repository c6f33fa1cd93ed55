"""Vantage points over ssh, the part that runs ssh: the helper's transport and the name
lookups made on the remote host.

:class:`SshTransport` is a :class:`~brokerpkg.transport.ProcessTransport` running
``ssh... [USER@]HOST HELPER`` whose exit is explained in ssh's terms
(:func:`brokerpkg.ssh.exit_error`).  :class:`RemoteLookups` asks the remote host's own
resolver (``getent``, so its /etc/hosts and DNS) with one ssh command at a time per
vantage point: the questions asked while one runs go together in the next.
:class:`RemoteResolver` and :class:`RemoteNameResolver` put it behind the session's
resolver interfaces.  :class:`VantagePoint` wires them together for ``Session.over_ssh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Self

from .errors import HelperNotFoundError, HostResolveError, ProcessError
from .resolve import DEFAULT_NAME_TIMEOUT, NameResolver, ResolvedAddress, Resolver
from .ssh import (
    FORWARD_DATABASES,
    GETENT_NOT_FOUND,
    HOST_NAME_DATABASE,
    REVERSE_DATABASE,
    Lookup,
    LookupAnswer,
    check_lookup_key,
    exit_error,
    first_address,
    first_name,
    helper_argv,
    lookup_command,
    parse_destination,
    parse_lookup_line,
    ssh_command,
)
from .transport import EXIT_WAIT, Launch, ProcessTransport

NAMES_REMOTE = "remote"
"""Host names of a vantage point's session are resolved there (``Session.over_ssh``)."""
NAMES_LOCAL = "local"
"""Host names of a vantage point's session are resolved here."""

LOOKUP_TIMEOUT = 15.0
"""Seconds one lookup command (connecting included) may take before it is killed."""
LOOKUPS_PER_COMMAND = 64
"""Questions answered by one lookup command (each runs its own getent, at once)."""
REMOTE_NAME_TIMEOUT = DEFAULT_NAME_TIMEOUT + 3.0
"""A reverse name on a vantage point may take an ssh connection more than one here."""


class SshTransport(ProcessTransport):
    """The helper on a vantage point: ssh as the child process (in its own process
    group, killed by :meth:`close`), its exit explained by :meth:`exit_error`."""

    destination = ""
    helper = ""

    @classmethod
    def connect(
        cls,
        argv: Sequence[str],
        *,
        destination: str,
        helper: str,
        env: Mapping[str, str] | None = None,
    ) -> Self:
        """Start ``argv`` (``ssh... DESTINATION HELPER``).

        Raises ProcessError when ssh cannot be started (its program missing included).
        """
        description = f"{helper} on {destination}"
        try:
            transport = cls.start(argv, env=env, description=description)
        except HelperNotFoundError as error:
            raise ProcessError(
                f"cannot run {argv[0]} to reach {destination}: {error.__cause__ or error}"
            ) from error
        transport.destination = destination
        transport.helper = helper
        return transport

    def exit_error(
        self, returncode: int | None, stderr_line: str | None, *, opened: bool
    ) -> ProcessError:
        """ssh's failure, a missing or unprivileged remote helper, or the helper's exit
        (:func:`brokerpkg.ssh.exit_error`); never raises."""
        return exit_error(self.destination, self.helper, returncode, stderr_line, opened=opened)


class RemoteLookups:
    """Questions for a vantage point's resolver, answered by ``getent`` there.

    ``ssh`` is the ssh command with the destination (``ssh... [USER@]HOST``); ``env``
    the environment ssh runs with.  One lookup command runs at a time: questions asked
    meanwhile (or in the same turn of the event loop) go together in the next one, so
    that a trace's dozen reverse names cost one ssh connection.  :meth:`close` kills a
    command still running.
    """

    def __init__(
        self,
        ssh: Sequence[str],
        destination: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self.destination = destination
        self._ssh = tuple(ssh)
        self._env = None if env is None else dict(env)
        self._timeout = timeout
        self._queue: list[tuple[Lookup, asyncio.Future[LookupAnswer]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._host_name: str | None = None
        self._closed = False

    async def ask(self, lookup: Lookup) -> LookupAnswer:
        """getent's answer to ``lookup`` on the remote host.

        Raises ValueError for a key getent would misread, SshError when ssh fails,
        ProcessError when the command gives no answer (times out, exits otherwise, or is
        not the shell: a forced command in authorized_keys) or the lookups are closed.
        """
        check_lookup_key(lookup.key)
        if self._closed:
            raise ProcessError(f"the name lookups on {self.destination} are closed")
        future: asyncio.Future[LookupAnswer] = asyncio.get_running_loop().create_future()
        self._queue.append((lookup, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return await future

    async def host_name(self) -> str:
        """The remote host's name (``uname -n`` there), asked once; raises like :meth:`ask`."""
        if self._host_name is None:
            answer = await self.ask(Lookup(HOST_NAME_DATABASE, "n"))
            if answer.status != 0 or not answer.lines:
                raise ProcessError(
                    f"uname -n on {self.destination} gave no name (status {answer.status})"
                )
            self._host_name = answer.lines[0].strip()
        return self._host_name

    async def close(self) -> None:
        """Fail what is queued, kill a lookup command still running; never raises."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.wait({runner})
        self._fail(self._queue, ProcessError(f"the session with {self.destination} closed"))
        self._queue = []

    @staticmethod
    def _fail(
        batch: Sequence[tuple[Lookup, asyncio.Future[LookupAnswer]]],
        error: ProcessError,
    ) -> None:
        """Fail every future of ``batch`` still waiting with ``error``."""
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    async def _run(self) -> None:
        """Runner task: one command per batch of queued questions, until none is left."""
        try:
            while self._queue:
                taken = self._queue[:LOOKUPS_PER_COMMAND]
                del self._queue[:LOOKUPS_PER_COMMAND]
                batch = [(lookup, future) for lookup, future in taken if not future.done()]
                if batch:
                    try:
                        await self._run_command(batch)
                    except ProcessError as error:
                        self._fail(batch, error)
        finally:
            if self._runner is asyncio.current_task():
                self._runner = None

    async def _run_command(
        self, batch: Sequence[tuple[Lookup, asyncio.Future[LookupAnswer]]]
    ) -> None:
        """Run one lookup command for ``batch``, answering each question as its line
        comes (a name in /etc/hosts does not wait for another's slow DNS).

        Raises SshError, ProcessError (see :meth:`ask`) when a question is left
        without an answer.
        """
        pipe = asyncio.subprocess.PIPE
        try:
            process = await asyncio.create_subprocess_exec(
                *self._ssh,
                lookup_command([lookup for lookup, _ in batch]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=pipe,
                stderr=pipe,
                env=self._env,
                start_new_session=True,
            )
        except OSError as error:
            raise ProcessError(
                f"cannot run {self._ssh[0]} to look names up on {self.destination}: {error}"
            ) from error
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            async with asyncio.timeout(self._timeout):
                _, errors = await asyncio.gather(
                    self._answer(process.stdout, batch), process.stderr.read()
                )
                await process.wait()
        except TimeoutError:
            raise ProcessError(
                f"the name lookups on {self.destination} took more than {self._timeout:g} s"
            ) from None
        finally:
            await _end(process)
        if all(future.done() for _, future in batch):
            return
        said = [line.strip() for line in errors.decode(errors="replace").splitlines()]
        last = next((line for line in reversed(said) if line), None)
        if process.returncode != 0:
            raise exit_error(
                self.destination, "the name lookup", process.returncode, last, opened=False
            )
        raise ProcessError(
            f"no answer to the name lookups on {self.destination}: the remote command did "
            "not run them (does authorized_keys force a command?); give numeric addresses"
        )

    @staticmethod
    async def _answer(
        output: asyncio.StreamReader,
        batch: Sequence[tuple[Lookup, asyncio.Future[LookupAnswer]]],
    ) -> None:
        """Hand each answer line of ``output`` to its question, until end-of-file."""
        while line := await output.readline():
            parsed = parse_lookup_line(line.decode(errors="replace"), len(batch))
            if parsed is not None:
                future = batch[parsed[0]][1]
                if not future.done():
                    future.set_result(parsed[1])


async def _end(process: asyncio.subprocess.Process) -> None:
    """Kill ``process``'s group if it still runs, and reap it; never raises."""
    if process.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXIT_WAIT):
            await process.wait()


class RemoteResolver(Resolver):
    """Host names resolved on a vantage point (getent ahosts there: its /etc/hosts, its
    DNS), cached as :class:`~brokerpkg.resolve.Resolver` caches; numeric addresses are
    used as they are."""

    def __init__(self, lookups: RemoteLookups) -> None:
        super().__init__()
        self.lookups = lookups

    async def _lookup(self, host: str, ip_version: int | None) -> ResolvedAddress:
        """The first address of the family getent gives there.

        Raises HostResolveError (no such name or address, or not a name), and like
        :meth:`RemoteLookups.ask` when the lookup itself fails.
        """
        where = f" on {self.lookups.destination}"
        family_text = "" if ip_version is None else f" to an IPv{ip_version} address"
        try:
            check_lookup_key(host)
        except ValueError:
            raise HostResolveError(f"cannot resolve {host!r}{where}: not a host name") from None
        answer = await self.lookups.ask(Lookup(FORWARD_DATABASES[ip_version], host))
        found = first_address(answer, ip_version) if answer.status == 0 else None
        if found is None:
            why = "no such address"
            if answer.status not in (0, GETENT_NOT_FOUND):
                why = f"getent exited with status {answer.status}"
            raise HostResolveError(f"unable to resolve {host!r}{family_text}{where}: {why}")
        return ResolvedAddress(*found)


class RemoteNameResolver(NameResolver):
    """Reverse names looked up on a vantage point (getent hosts there), cached and
    bounded in time as :class:`~brokerpkg.resolve.NameResolver` does (default timeout
    REMOTE_NAME_TIMEOUT: an ssh connection is part of each lookup)."""

    def __init__(self, lookups: RemoteLookups, timeout: float = REMOTE_NAME_TIMEOUT) -> None:
        super().__init__(timeout)
        self.lookups = lookups

    async def lookup(self, address: str) -> str | None:
        """``address``'s name there, or None; raises like :meth:`RemoteLookups.ask`."""
        answer = await self.lookups.ask(Lookup(REVERSE_DATABASE, address))
        return first_name(answer) if answer.status == 0 else None


class VantagePoint:
    """A helper on a vantage point, as ``Session.over_ssh`` runs it: ``destination``
    (``[USER@]HOST``), the remote command ``helper``, the ``argv`` that runs it through
    ``ssh`` (words, a string split as the shell splits it, or None: ``$BROKERPKG_SSH``,
    else ssh's default), and with ``names`` NAMES_REMOTE the ``lookups`` made there and
    the resolvers over them (None when names are resolved here).  ``env`` is ssh's
    environment.

    Raises TypeError/ValueError for a bad destination, ssh command, helper or ``names``.
    """

    def __init__(
        self,
        destination: str,
        *,
        helper: str,
        ssh: str | Sequence[str] | None,
        names: str,
        env: Mapping[str, str] | None,
    ) -> None:
        if names not in (NAMES_REMOTE, NAMES_LOCAL):
            raise ValueError(f"names must be {NAMES_REMOTE!r} or {NAMES_LOCAL!r}, got {names!r}")
        self.destination = str(parse_destination(destination))
        self.helper = helper
        words = ssh_command(ssh)
        self.argv = tuple(helper_argv(words, self.destination, helper))
        self.lookups: RemoteLookups | None = None
        self.resolver: RemoteResolver | None = None
        self.name_resolver: RemoteNameResolver | None = None
        if names == NAMES_REMOTE:
            self.lookups = RemoteLookups([*words, self.destination], self.destination, env=env)
            self.resolver = RemoteResolver(self.lookups)
            self.name_resolver = RemoteNameResolver(self.lookups)

    @property
    def launch(self) -> Launch:
        """How the session starts the helper (and names it in messages)."""
        return Launch(self.argv, None, f"{self.helper} on {self.destination}")

    def connect(self, env: Mapping[str, str] | None) -> SshTransport:
        """Run the helper there through ssh; raises ProcessError when ssh cannot start."""
        return SshTransport.connect(
            self.argv, destination=self.destination, helper=self.helper, env=env
        )

    async def host_name(self) -> str:
        """The vantage point's name (``uname -n`` there, asked once), or the
        destination's host when names are resolved here.

        Raises ProcessError (SshError) when the remote command fails.
        """
        if self.lookups is None:
            return parse_destination(self.destination).host
        return await self.lookups.host_name()

    async def close(self) -> None:
        """Stop the lookups' command still running; never raises."""
        if self.lookups is not None:
            await self.lookups.close()
