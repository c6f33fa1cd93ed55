"""The asyncio session's probe templates: :class:`SessionTemplates` resolves a probe's
host (and source address) through the session's resolver, makes the probe's template
with the pure :func:`~brokerpkg.templates.probe_template` and remembers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from . import protocol as wire
from .engine import ProbeTemplate
from .protocol import ProbeOptions
from .resolve import ResolvedAddress, Resolver
from .templates import TypedCache, given_template, probe_template

CALL_OPTIONS = (
    "details",
    "ip_version",
    "ttl",
    "protocol",
    "port",
    "local_ip",
    "local_port",
    "local_device",
    "timeout",
    "size",
    "bit_pattern",
    "tos",
    "mark",
    "flow",
)
"""The keyword arguments of ``Session.probe`` in the order of its call key, after the host."""


class SessionTemplates:
    """The asyncio session's probe templates, made once per host and options through
    its ``resolver`` for a helper with ``features`` (the session's own mapping, filled
    at open), and remembered (:class:`TypedCache`): ``by_call`` holds them by a
    probe's own keyword values, so that a repeated probe skips validation."""

    __slots__ = ("_features", "_given", "_made", "_probe_grace", "by_call", "resolver")

    def __init__(self, resolver: Resolver, features: Mapping[str, str], probe_grace: float):
        self.resolver = resolver
        self._features = features
        self._probe_grace = probe_grace
        self._made: TypedCache[ProbeTemplate] = TypedCache()
        self._given: TypedCache[ProbeTemplate] = TypedCache()
        self.by_call: TypedCache[ProbeTemplate] = TypedCache()

    async def template(self, host: str, options: ProbeOptions) -> ProbeTemplate:
        """The template of probes of ``host`` with ``options``, from the cache or made
        now.  Raises HostResolveError and FeatureNotSupportedError."""
        key = (host, options)
        template = self._made.get(key)
        if template is None:
            target = await self.resolver.resolve(host, options.ip_version)
            local = await self._resolve_local(options.local_ip, target)
            template = probe_template(
                options, target.address, target.ip_version, local, self._features, self._probe_grace
            )
            self._made.put(key, template)
        return template

    async def of_call(
        self, key: tuple[object, ...], ensure_usable: Callable[[], None]
    ) -> ProbeTemplate:
        """The template of a ``Session.probe`` call whose ``key`` is its host and then
        its options in CALL_OPTIONS order: the options checked, then ``ensure_usable()``
        called, then the template made (:meth:`template`) and remembered in ``by_call``.

        Raises TypeError/ValueError for a bad option, what ``ensure_usable`` raises,
        HostResolveError and FeatureNotSupportedError.
        """
        options = wire.make_probe_options(**dict(zip(CALL_OPTIONS, key[1:], strict=True)))
        ensure_usable()
        template = await self.template(cast(str, key[0]), options)
        self.by_call.put(key, template)
        return template

    async def _resolve_local(self, local_ip: str | None, target: ResolvedAddress) -> str | None:
        """Resolve the source address in the target's family; raises HostResolveError."""
        if local_ip is None:
            return None
        return (await self.resolver.resolve(local_ip, target.ip_version)).address

    async def plan(self, hosts: Iterable[str], options: ProbeOptions) -> list[ProbeTemplate]:
        """One template per host, each distinct host resolved once; raises like
        :meth:`template`."""
        templates: dict[str, ProbeTemplate] = {}
        plan: list[ProbeTemplate] = []
        for host in hosts:
            template = templates.get(host)
            if template is None:
                template = templates[host] = await self.template(host, options)
            plan.append(template)
        return plan

    def given(self, arguments: Sequence[tuple[str, str]]) -> ProbeTemplate:
        """:func:`given_template` of ``arguments``, remembered; raises like it."""
        key = tuple(arguments)
        template = self._given.get(key)
        if template is None:
            template = given_template(key, self._probe_grace)
            self._given.put(key, template)
        return template

    def forget_names(self) -> None:
        """Forget the templates made from resolved names (the given ones hold none)."""
        self._made.clear()
        self.by_call.clear()
