"""Finding plugins: built-ins and the ``xbench`` entry-point group, through one pluggy path.

A plugin that fails to import, or a hook that raises or yields something invalid, is recorded
with the plugin's name and left out; the rest load. Two plugins that provide the same name are an
error naming every provider. Set ``XBENCH_DISABLE_PLUGINS=a,b`` to skip entry points by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import pkgutil
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginConflictError, UsageError, did_you_mean
from .naming import select
from .specs import NAME_PATTERN, SPEC_TYPES

ENTRY_POINT_GROUP = "xbench"

PLUGIN_PACKAGES = ("xbench.datasets", "xbench.plugins.models", "xbench.plugins.methods", "xbench.plugins.metrics",
                   "xbench.plugins.verifications")
"""The packages of the built-in plugins: every module in them without a leading ``_`` is one."""
CORE_PLUGINS = ("xbench.executors", "xbench.slurm")
"""Core modules that register as plugins too (the ``local``, ``dask`` and ``slurm`` executors)."""


def builtin_plugins() -> tuple[str, ...]:
    """Every built-in plugin module, found by scanning :data:`PLUGIN_PACKAGES` (without importing
    them), so a new module is registered by existing and none can be forgotten; ``_``-prefixed
    modules are helpers."""
    found = list(CORE_PLUGINS)
    for package in PLUGIN_PACKAGES:
        spec = importlib.util.find_spec(package)
        for module in sorted(pkgutil.iter_modules(spec.submodule_search_locations), key=lambda m: m.name):
            if not module.name.startswith("_"):
                found.append(f"{package}.{module.name}")
    return tuple(found)


BUILTIN_PLUGINS: tuple[str, ...] = builtin_plugins()


@dataclass
class PluginRecord:
    """One registered plugin module, as ``xbench plugins`` shows it."""

    name: str
    module: str
    builtin: bool
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "active"  # active | error | disabled
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "status": self.status,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Entry:
    """A spec and the plugin that provided it."""

    spec: Any
    plugin: PluginRecord

    @property
    def version(self) -> str:
        return str(getattr(self.spec, "version", "1"))


class _Manager(pluggy.PluginManager):
    """Treat every ``xbench_*`` function as a hook implementation, so typos are caught, not ignored."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("xbench_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


def _xbench_version() -> str:
    from . import __version__

    return __version__


class Registry:
    """Every spec of every kind, by name, with the plugin that provided it."""

    def __init__(self, plugins: list[PluginRecord], entries: dict[str, dict[str, Entry]]):
        self.plugins = plugins
        self.entries = entries

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise UsageError(self.unknown_message(kind, name)) from None

    def unknown_message(self, kind: str, name: str) -> str:
        singular = kind[:-1]
        available = ", ".join(self.names(kind)) or "none"
        broken = [p.name for p in self.plugins if p.status == "error"]
        hint = f" Plugins that failed to load: {', '.join(broken)} (see `xbench plugins --all`)." if broken else ""
        return (
            f"Unknown {singular} {name!r}{did_you_mean(name, self.entries[kind])}. "
            f"Installed {kind}: {available}.{hint}"
        )

    def match(self, kind: str, pattern: str) -> list[str]:
        """Names of ``kind`` that a name or glob selects (:mod:`xbench.naming`), sorted."""
        return sorted(select(pattern, self.entries[kind]))

    @property
    def problems(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status == "error"]


def load_registry(
    *,
    builtins: Sequence[str] = BUILTIN_PLUGINS,
    entry_points: bool = True,
    extra: Iterable[tuple[str, object]] = (),
) -> Registry:
    """Register built-ins, then the ``xbench`` entry points, then ``extra`` (name, module) pairs.

    Returns a fresh registry each call (no global state), so tests and workers are independent.
    """
    pm = _Manager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    records: list[PluginRecord] = []

    def register(obj: object, record: PluginRecord) -> None:
        records.append(record)
        try:
            pm.register(obj, name=record.name)
        except Exception as exc:  # pluggy validation: wrong hook signature, duplicate name
            record.status = "error"
            record.errors.append(f"could not register: {exc}")

    for modname in builtins:
        record = PluginRecord(name=modname, module=modname, builtin=True, distribution="xbench",
                              version=_xbench_version())
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            record.status = "error"
            record.errors.append(f"import failed: {type(exc).__name__}: {exc}")
            records.append(record)
            continue
        register(module, record)

    if entry_points and os.environ.get("XBENCH_NO_ENTRY_POINTS", "") == "":
        disabled = {s.strip() for s in os.environ.get("XBENCH_DISABLE_PLUGINS", "").split(",") if s.strip()}
        for ep in _entry_points():
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                module=ep.value,
                builtin=False,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            if ep.name in disabled:
                record.status = "disabled"
                records.append(record)
                continue
            if pm.has_plugin(ep.name):
                record.status = "error"
                record.errors.append(f"another plugin is already registered under the name {ep.name!r}")
                records.append(record)
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                record.status = "error"
                record.errors.append(f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}")
                records.append(record)
                continue
            register(obj, record)

    for name, obj in extra:
        register(obj, PluginRecord(name=name, module=getattr(obj, "__name__", name), builtin=False))

    _check_unknown_hooks(pm, records)
    entries = _collect(pm, records)
    return Registry(records, entries)


def _entry_points():
    return sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _check_unknown_hooks(pm: pluggy.PluginManager, records: list[PluginRecord]) -> None:
    by_name = {r.name: r for r in records}
    known = set(hookspecs.HOOKS.values())
    for name in list(pm.hook.__dict__):
        caller = getattr(pm.hook, name)
        if name.startswith("xbench_") and name not in known and not caller.has_spec():
            for impl in caller.get_hookimpls():
                record = by_name.get(impl.plugin_name)
                if record is not None:  # its other hooks still load: the typo costs only itself
                    record.status = "error"
                    record.errors.append(f"unknown hook {name}{did_you_mean(name, known)}")


def _collect(pm: pluggy.PluginManager, records: list[PluginRecord]) -> dict[str, dict[str, Entry]]:
    """Call each plugin's hooks one by one, so a raising hook loses only that plugin's specs."""
    by_name = {r.name: r for r in records}
    found: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in hookspecs.HOOKS}
    for kind, hookname in hookspecs.HOOKS.items():
        spec_type = SPEC_TYPES[kind]
        for impl in reversed(getattr(pm.hook, hookname).get_hookimpls()):
            record = by_name[impl.plugin_name]
            if hookname not in record.hooks:
                record.hooks.append(hookname)
            try:
                specs = list(impl.function() or ())
            except Exception as exc:
                record.status = "error"
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                record.errors.append(
                    f"{hookname}() raised {type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})"
                )
                continue
            for spec in specs:
                problem = _invalid(spec, spec_type)
                if problem:
                    record.status = "error"
                    record.errors.append(f"{hookname}() yielded {problem}")
                    continue
                found[kind].setdefault(spec.name, []).append(Entry(spec, record))
    conflicts = {
        kind: {name: entries for name, entries in names.items() if len(entries) > 1}
        for kind, names in found.items()
    }
    if any(conflicts.values()):
        raise PluginConflictError(_conflict_message(conflicts))
    return {kind: {name: entries[0] for name, entries in names.items()} for kind, names in found.items()}


def _invalid(spec: object, spec_type: type) -> str | None:
    if not isinstance(spec, spec_type):
        return f"a {type(spec).__name__}, expected a {spec_type.__name__}"
    if not getattr(spec_type, "NAME_PATTERN", NAME_PATTERN).match(spec.name):
        return (f"the invalid name {spec.name!r}: names are lowercase letters, digits, '-', '_' and '.' "
                "(third parties prefix theirs, e.g. 'acme.gradcam')")
    return None


def _conflict_message(conflicts: dict[str, dict[str, list[Entry]]]) -> str:
    lines = ["Conflicting plugins: the same name is provided more than once."]
    for kind, names in conflicts.items():
        for name, entries in sorted(names.items()):
            lines.append(f"  {kind[:-1]} {name!r} is provided by:")
            for e in entries:
                dist = f"{e.plugin.distribution} {e.plugin.version}" if e.plugin.distribution else "no distribution"
                lines.append(f"    - plugin {e.plugin.name!r} ({dist})")
    lines.append("Uninstall one of them, or set XBENCH_DISABLE_PLUGINS=<plugin name> to skip one.")
    return "\n".join(lines)
