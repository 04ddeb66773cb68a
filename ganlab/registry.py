"""The plugin manager: loads plugins, calls their register hooks, and keeps what they registered.

Core modules (datasets, the pytorch/examples checkpoint reader) register exactly like the
plugins found through the ``ganlab`` entry-point group, built-ins and third-party alike.
A plugin that fails to import or to register is recorded with its error and skipped.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from ganlab import hookspecs
from ganlab.errors import GanlabError

ENTRY_POINT_GROUP = "ganlab"
CORE_PLUGINS = ("ganlab.core_plugin",)
DISABLE_ENV = "GANLAB_DISABLE_PLUGINS"
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass
class PluginInfo:
    """One plugin as ``ganlab plugins`` lists it."""

    name: str
    distribution: str
    version: str
    registers: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    error: str | None = None
    disabled: bool = False


def _kinds() -> dict[str, tuple[str, type]]:
    """kind -> (hook name, required base class); imported late so ``ganlab --help`` stays light."""
    from ganlab.components import Analysis, Evaluator
    from ganlab.datasets import DatasetSource
    from ganlab.experiments import Experiment

    return {
        "datasets": ("ganlab_register_datasets", DatasetSource),
        "evaluators": ("ganlab_register_evaluators", Evaluator),
        "analyses": ("ganlab_register_analyses", Analysis),
        "experiments": ("ganlab_register_experiments", Experiment),
    }


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, plugins: dict[str, PluginInfo]):
        self.pm = pm
        self.plugins = plugins
        self.items: dict[str, dict[str, Any]] = {}
        self.owner: dict[tuple[str, str], str] = {}
        for kind, (hook_name, base) in _kinds().items():
            self.items[kind] = {}
            # Registration order (core, then entry points): on a name clash the later plugin is the one refused.
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                self._call_register(kind, base, impl)

    @property
    def datasets(self) -> dict[str, Any]:
        return self.items["datasets"]

    @property
    def evaluators(self) -> dict[str, Any]:
        return self.items["evaluators"]

    @property
    def analyses(self) -> dict[str, Any]:
        return self.items["analyses"]

    @property
    def experiments(self) -> dict[str, Any]:
        return self.items["experiments"]

    def components(self) -> dict[str, Any]:
        """Evaluators then analyses, by name."""
        return {**self.evaluators, **self.analyses}

    def _call_register(self, kind: str, base: type, impl: pluggy.HookImpl) -> None:
        plugin = impl.plugin_name
        added: list[str] = []

        def register(obj: Any) -> None:
            name = getattr(obj, "name", None)
            if not isinstance(obj, base):
                raise GanlabError(f"plugin {plugin} registered {obj!r} as one of {kind}, but it is not a {base.__name__}")
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise GanlabError(f"plugin {plugin} registered {kind[:-1]} name {name!r}: use lowercase letters, digits and dashes")
            if name in self.items[kind]:
                raise GanlabError(f"{kind[:-1]} name {name!r} is registered by both {self.owner[(kind, name)]} and {plugin}; "
                                  f"disable one with {DISABLE_ENV}")
            self.items[kind][name] = obj
            self.owner[(kind, name)] = plugin
            added.append(name)

        try:
            impl.function(register=register)
        except Exception as exc:  # a broken plugin must not take ganlab down
            for name in added:  # drop its partial registrations too
                del self.items[kind][name]
                del self.owner[(kind, name)]
            info = self.plugins.setdefault(plugin, PluginInfo(plugin, "?", "?"))
            info.error = f"{type(exc).__name__}: {exc}"
            return
        self.plugins.setdefault(plugin, PluginInfo(plugin, "?", "?")).registers.setdefault(kind, []).extend(added)

    def errors(self) -> list[str]:
        """One line per plugin that failed to load or register."""
        return [f"plugin {p.name} ({p.distribution}) failed and was skipped: {p.error}"
                for p in self.plugins.values() if p.error]

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.items[kind][name]
        except KeyError:
            known = ", ".join(sorted(self.items[kind])) or "none"
            raise GanlabError(f"unknown {kind[:-1]} {name!r}; known {kind}: {known} (see `ganlab plugins`)") from None


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _register_checked(pm: pluggy.PluginManager, module: Any, info: PluginInfo) -> None:
    try:
        pm.register(module, name=info.name)
        pm.check_pending()  # a hookimpl with no spec (a typo in a hook name) fails here
    except Exception as exc:
        if pm.is_registered(module):
            pm.unregister(module)
        info.error = f"{type(exc).__name__}: {exc}"


def build_plugin_manager() -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """A plugin manager with the core modules and every enabled entry-point plugin registered."""
    from ganlab import __version__

    pm = pluggy.PluginManager("ganlab")
    pm.add_hookspecs(hookspecs)
    plugins: dict[str, PluginInfo] = {}
    disabled = disabled_names()
    for module_name in CORE_PLUGINS:
        info = plugins[module_name] = PluginInfo(module_name, "ganlab", __version__)
        _register_checked(pm, importlib.import_module(module_name), info)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        info = plugins[ep.name] = PluginInfo(ep.name, dist, version)
        if ep.name in disabled:
            info.disabled = True
            continue
        try:
            module = ep.load()
        except Exception as exc:  # kedro-style: name the plugin, keep going
            info.error = f"import failed: {type(exc).__name__}: {exc}"
            continue
        _register_checked(pm, module, info)
    return pm, plugins


_plugins: tuple[pluggy.PluginManager, dict[str, PluginInfo]] | None = None
_registry: Registry | None = None


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """The process-wide plugin manager and plugin list (plugin modules imported, nothing registered yet)."""
    global _plugins
    if _plugins is None:
        _plugins = build_plugin_manager()
    return _plugins


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, built on first use (``reload`` reloads the plugins, e.g. in tests)."""
    global _registry
    if reload:
        reset()
    if _registry is None:
        _registry = Registry(*plugin_manager())
    return _registry


def register_commands(cli) -> None:
    """Let every plugin add click commands to ``cli``; a failing plugin is recorded, not raised."""
    pm, plugins = plugin_manager()
    for impl in pm.hook.ganlab_register_commands.get_hookimpls():
        info = plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        before = set(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
        added = sorted(set(cli.commands) - before)
        if added:
            info.registers.setdefault("commands", []).extend(added)


def register_plugin(module: Any, name: str) -> Registry:
    """Register an extra plugin object in-process (tests, notebooks) and rebuild the registry."""
    global _plugins, _registry
    pm, plugins = build_plugin_manager()
    info = plugins[name] = PluginInfo(name, "(in-process)", "-")
    _register_checked(pm, module, info)
    _plugins = (pm, plugins)
    _registry = Registry(pm, plugins)
    return _registry


def reset() -> None:
    """Forget plugins and registry so the next call loads them afresh."""
    global _plugins, _registry
    _plugins = None
    _registry = None


def load_foreign_checkpoint(path: str) -> Any:
    """Ask plugins to read a checkpoint ganlab's own format does not cover."""
    return plugin_manager()[0].hook.ganlab_load_checkpoint(path=path)

