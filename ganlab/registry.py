"""The plugin manager: loads plugins, calls their register hooks through pluggy, keeps what they registered.

Core modules (datasets, the pytorch/examples checkpoint reader) register exactly like the plugins found
through the ``ganlab`` entry-point group, built-ins and third-party alike. Hooks are called the way pluggy
documents (``pm.hook.ganlab_register_evaluators(register=...)``), so ``tryfirst``/``trylast`` and hook
wrappers work. Registration is all or nothing per plugin: a plugin that fails to import, raises in any
hook, or registers something invalid or clashing is disabled whole, and its error is kept for
``ganlab plugins``. Only the top of the house (CLI, report, ``ganlab.api``) uses this module.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from ganlab import hookspecs
from ganlab.errors import GanlabError

ENTRY_POINT_GROUP = "ganlab"
CORE_PLUGINS = ("ganlab.core_plugin",)
BUILTIN_DISTRIBUTION = "ganlab"
DISABLE_ENV = "GANLAB_DISABLE_PLUGINS"
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
KINDS = {  # kind -> (hook, base class as "module:name", imported late so `ganlab --help` stays light)
    "datasets": ("ganlab_register_datasets", "ganlab.datasets:DatasetSource"),
    "evaluators": ("ganlab_register_evaluators", "ganlab.components:Evaluator"),
    "analyses": ("ganlab_register_analyses", "ganlab.components:Analysis"),
    "experiments": ("ganlab_register_experiments", "ganlab.experiments:Experiment"),
    "detectors": ("ganlab_register_detectors", "ganlab.detectors:Detector"),
    "feature_spaces": ("ganlab_register_feature_spaces", "ganlab.feature_spaces:FeatureSpace"),
}


@dataclass
class PluginInfo:
    """One plugin as ``ganlab plugins`` lists it."""

    name: str
    distribution: str
    version: str
    registers: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    error: str | None = None
    disabled: bool = False

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


class PluginFault(Exception):
    """Raised inside a hook call to disable one plugin (a bad or clashing registration)."""

    def __init__(self, plugin: str, message: str):
        super().__init__(message)
        self.plugin = plugin


def _base_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _hookimpl_codes(pm: pluggy.PluginManager, hook_name: str) -> dict[Any, str]:
    """code object of each implementation of ``hook_name`` -> its plugin's name."""
    codes = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        function = getattr(impl.function, "__func__", impl.function)
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    return codes


def _calling_plugin(codes: dict[Any, str]) -> str | None:
    """The plugin whose hook implementation is on the call stack (the innermost one)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code in codes:
            return codes[frame.f_code]
        frame = frame.f_back
    return None


def _failing_plugin(exc: BaseException, codes: dict[Any, str]) -> str | None:
    """The plugin whose hook implementation raised ``exc`` (the innermost one in its traceback)."""
    if isinstance(exc, PluginFault):
        return exc.plugin
    found, tb = None, exc.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _declaration_problem(obj: Any) -> str | None:
    """What is wrong with a component's declared ``directions``, or None."""
    directions = getattr(obj, "directions", None)
    if directions is None:
        return None
    if not isinstance(directions, dict) or not all(isinstance(k, str) for k in directions):
        return "directions must map metric names or globs to 'higher', 'lower' or None"
    wrong = [f"{k}: {v!r}" for k, v in directions.items() if v not in ("higher", "lower", None)]
    return f"directions {', '.join(wrong)}: use 'higher', 'lower' or None" if wrong else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, PluginFault) else f"{type(exc).__name__}: {text}"


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, plugins: dict[str, PluginInfo]):
        self.pm = pm
        self.plugins = plugins
        self.items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.owner: dict[tuple[str, str], str] = {}
        bases = {kind: _base_class(spec) for kind, (_, spec) in KINDS.items()}
        # Each failure disables one plugin and starts over, so this ends after at most len(plugins) + 1 rounds.
        for _ in range(len(plugins) + 2):
            self.items = {kind: {} for kind in KINDS}
            self.owner = {}
            for info in plugins.values():
                info.registers = {k: v for k, v in info.registers.items() if k not in KINDS}
            try:
                for kind, (hook_name, _) in KINDS.items():
                    self._call(kind, hook_name, bases[kind])
                return
            except Exception as exc:  # a broken plugin must not take ganlab down
                culprit = getattr(exc, "_ganlab_plugin", None)
                if culprit is None:
                    raise
                disable_plugin(pm, plugins, culprit, _one_line(exc))
        raise GanlabError("plugins keep failing to register; start with GANLAB_DISABLE_PLUGINS set")  # pragma: no cover

    def _call(self, kind: str, hook_name: str, base: type) -> None:
        codes = _hookimpl_codes(self.pm, hook_name)

        def register(obj: Any) -> None:
            plugin = _calling_plugin(codes) or "?"
            name = getattr(obj, "name", None)
            if not isinstance(obj, base):
                raise PluginFault(plugin, f"plugin {plugin} registered {obj!r} as one of {kind}, but it is not a "
                                          f"{base.__name__}")
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise PluginFault(plugin, f"plugin {plugin} registered {kind[:-1]} name {name!r}: use lowercase "
                                          "letters, digits and dashes")
            problem = _declaration_problem(obj)
            if problem:
                raise PluginFault(plugin, f"plugin {plugin} registered {kind[:-1]} {name!r}: {problem}")
            if name in self.items[kind]:
                other = self.owner[(kind, name)]
                # A built-in never loses its name: the third-party side of a clash is the one disabled.
                loser = other if self._builtin(plugin) and not self._builtin(other) else plugin
                raise PluginFault(loser, f"{kind[:-1]} name {name!r} is registered by both {other} and {plugin}; "
                                         f"{loser} was disabled (or disable one yourself with {DISABLE_ENV})")
            self.items[kind][name] = obj
            self.owner[(kind, name)] = plugin
            self.plugins.setdefault(plugin, PluginInfo(plugin, "?", "?")).registers.setdefault(kind, []).append(name)

        try:
            getattr(self.pm.hook, hook_name)(register=register)
        except Exception as exc:
            exc._ganlab_plugin = _failing_plugin(exc, codes)
            raise

    def _builtin(self, plugin: str) -> bool:
        info = self.plugins.get(plugin)
        return bool(info and info.builtin)

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

    @property
    def detectors(self) -> dict[str, Any]:
        return self.items["detectors"]

    @property
    def feature_spaces(self) -> dict[str, Any]:
        return self.items["feature_spaces"]

    def components(self) -> dict[str, Any]:
        """Evaluators then analyses, by name."""
        return {**self.evaluators, **self.analyses}

    def component_owner(self, name: str) -> str:
        return self.owner.get(("evaluators", name)) or self.owner.get(("analyses", name)) or "?"

    def errors(self) -> list[str]:
        """One line per plugin that failed to load or register."""
        return [f"plugin {p.name} ({p.distribution}) failed and was skipped: {p.error}"
                for p in self.plugins.values() if p.error]

    def failed_hint(self) -> str:
        """A sentence naming failed plugins, for 'unknown name' errors (their names may be what is missing)."""
        failed = [f"{p.name} ({p.error})" for p in self.plugins.values() if p.error]
        return f"; note that these plugins failed to load: {'; '.join(failed)}" if failed else ""

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.items[kind][name]
        except KeyError:
            known = ", ".join(sorted(self.items[kind])) or "none"
            raise GanlabError(f"unknown {kind[:-1]} {name!r}; known {kind}: {known} (see `ganlab plugins`)"
                              f"{self.failed_hint()}") from None


def disable_plugin(pm: pluggy.PluginManager, plugins: dict[str, PluginInfo], name: str, error: str) -> None:
    """Record ``error`` for plugin ``name`` and take all of its hook implementations out."""
    info = plugins.setdefault(name, PluginInfo(name, "?", "?"))
    info.error = info.error or error
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)


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
        info = plugins[module_name] = PluginInfo(module_name, BUILTIN_DISTRIBUTION, __version__)
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
    unknown = sorted(disabled - set(plugins))
    if unknown:
        print(f"ganlab: warning: {DISABLE_ENV} names unknown plugins: {', '.join(unknown)} (see `ganlab plugins`)",
              file=sys.stderr)
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


def register_commands(cli: Any) -> dict[str, str]:
    """Let every plugin add click commands to ``cli``; returns command name -> plugin.

    A plugin that raises, or adds a command whose name is taken, is disabled whole and its commands removed.
    """
    pm, plugins = plugin_manager()
    codes = _hookimpl_codes(pm, "ganlab_register_commands")
    builtin_commands = set(cli.commands)
    added: dict[str, str] = {}
    for _ in range(len(plugins) + 2):
        added = {}
        try:
            _call_command_hooks(pm, cli, codes, builtin_commands, added)
            break
        except Exception as exc:
            for name in added:
                cli.commands.pop(name, None)
            culprit = _failing_plugin(exc, codes)
            if culprit is None:
                raise
            disable_plugin(pm, plugins, culprit, _one_line(exc))
    for name, plugin in added.items():
        plugins.setdefault(plugin, PluginInfo(plugin, "?", "?")).registers.setdefault("commands", []).append(name)
    return added


def _call_command_hooks(pm: pluggy.PluginManager, cli: Any, codes: dict[Any, str], taken: set[str],
                        added: dict[str, str]) -> None:
    """One call of ``ganlab_register_commands``; ``added`` collects command name -> plugin as they come."""

    def add_command(cmd: Any, name: str | None = None) -> None:
        plugin = _calling_plugin(codes) or "?"
        name = name or cmd.name
        if name in taken or name in added:
            other = "ganlab" if name in taken else added[name]
            raise PluginFault(plugin, f"command {name!r} of plugin {plugin} clashes with {other}'s; {plugin} was "
                                      "disabled")
        type(cli).add_command(cli, cmd, name)
        added[name] = plugin

    cli.add_command = add_command  # an instance attribute: attributes each command to its plugin
    try:
        pm.hook.ganlab_register_commands(cli=cli)
    finally:
        del cli.add_command


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
