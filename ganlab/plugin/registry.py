"""The plugin manager: loads plugins and keeps what each one registered, all or nothing per plugin (see
"How hooks are called" in docs/reference.md). Each plugin's register hooks are called on their own (pluggy's
``subset_hook_caller``) with a ``register`` callback bound to that plugin, so every registration belongs to a
known plugin and tryfirst/trylast and wrappers work as pluggy documents. Only the top of the house uses this.
"""
import difflib
import functools
import importlib
import os
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from ganlab.errors import GanlabError, a
from ganlab.plugin import hookspecs
from ganlab.plugin.options import declared

ENTRY_POINT_GROUP = "ganlab"
# listed name -> module; the name users see in `ganlab plugins` stays put when the module moves
CORE_PLUGINS = {"ganlab.core_plugin": "ganlab.plugin.core_plugin"}
BUILTIN_DISTRIBUTION = "ganlab"
DISABLE_ENV = "GANLAB_DISABLE_PLUGINS"
COMPONENT_KINDS = ("evaluators", "analyses")  # one name space: --only, --set and metrics.json name components
NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
KINDS = {  # kind -> (hook, base class as "module:name", imported late so `ganlab --help` stays light)
    "datasets": ("ganlab_register_datasets", "ganlab.data.datasets:DatasetSource"),
    "evaluators": ("ganlab_register_evaluators", "ganlab.plugin.components:Evaluator"),
    "analyses": ("ganlab_register_analyses", "ganlab.plugin.components:Analysis"),
    "experiments": ("ganlab_register_experiments", "ganlab.plugin.experiments:Experiment"),
    "detectors": ("ganlab_register_detectors", "ganlab.plugin.detectors:Detector"),
    "feature_spaces": ("ganlab_register_feature_spaces", "ganlab.plugin.feature_spaces:FeatureSpace"),
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


def _info(plugins: dict[str, PluginInfo], name: str) -> PluginInfo:
    return plugins.setdefault(name, PluginInfo(name, "?", "?"))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, GanlabError) else f"{type(exc).__name__}: {text}"


def _declaration_problem(obj: Any) -> str | None:
    """What is wrong with a component's declared ``needs``, options' defaults or ``directions``, or None."""
    from ganlab.plugin.components import NEEDS

    needs = getattr(obj, "needs", ())
    if isinstance(needs, str) or not all(need in NEEDS for need in needs):
        return f"needs {needs!r}: give a tuple of {', '.join(map(repr, NEEDS))}"
    for option, value in (getattr(obj, "options", None) or {}).items():
        spec = declared(value)
        try:
            spec.check(spec.default, f"{obj.name}.{option}")
        except GanlabError as exc:
            return f"option {option}'s default {spec.default!r} breaks its own rule ({str(exc).split(': ', 1)[1]})"
        if spec.of is not None and spec.of not in KINDS:
            return f"option {option} has of={spec.of!r}; use one of {', '.join(KINDS)}"
    directions = getattr(obj, "directions", None)
    if directions is None:
        return None
    if not isinstance(directions, dict) or not all(isinstance(k, str) for k in directions):
        return "directions must map metric names or globs to 'higher', 'lower' or None"
    wrong = [f"{k}: {v!r}" for k, v in directions.items() if v not in ("higher", "lower", None)]
    return f"directions {', '.join(wrong)}: use 'higher', 'lower' or None" if wrong else None


def _clashing(kind: str, name: str) -> list[tuple[str, str]]:
    """The registrations ``name`` may not share: its own kind's, and for a component every component's."""
    return [(k, name) for k in COMPONENT_KINDS] if kind in COMPONENT_KINDS else [(kind, name)]


def call_order(pm: pluggy.PluginManager, hook_names: list[str]) -> list[str]:
    """The plugins implementing ``hook_names``, in the order pluggy calls them (tryfirst first)."""
    impls = [impl for name in hook_names for impl in reversed(getattr(pm.hook, name).get_hookimpls())]
    return list(dict.fromkeys(impl.plugin_name for impl in impls))


def call_one(pm: pluggy.PluginManager, plugin: str, hook_name: str, **kwargs: Any) -> Any:
    """Call ``hook_name`` of one plugin only (its wrappers and tryfirst/trylast included)."""
    others = [p for name, p in pm.list_name_plugin() if name != plugin]
    return pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, plugins: dict[str, PluginInfo]):
        self.pm, self.plugins = pm, plugins
        self.items: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.owner: dict[tuple[str, str], str] = {}
        bases = {kind: pkgutil.resolve_name(base) for kind, (_, base) in KINDS.items()}
        for plugin in call_order(pm, [hook for hook, _ in KINDS.values()]):
            found: dict[tuple[str, str], Any] = {}  # kept only once all of the plugin's hooks have run
            try:
                for kind, (hook_name, _) in KINDS.items():
                    check = functools.partial(self._check, plugin, kind, bases[kind], found)
                    call_one(pm, plugin, hook_name, register=check)
            except Exception as exc:  # a broken plugin must not take ganlab down
                disable_plugin(pm, plugins, plugin, _one_line(exc))
                continue
            registers = _info(plugins, plugin).registers
            for kind in KINDS:  # what this registry holds, whatever an earlier registry recorded
                registers.pop(kind, None)
            for (kind, name), obj in found.items():
                self.items[kind][name], self.owner[(kind, name)] = obj, plugin
                registers.setdefault(kind, []).append(name)

    def _check(self, plugin: str, kind: str, base: type, found: dict[tuple[str, str], Any], obj: Any) -> None:
        """Put one registration of ``plugin`` in ``found``, or raise what is wrong with it."""
        name = getattr(obj, "name", None)
        if not isinstance(obj, base):
            a_class = isinstance(obj, type) and issubclass(obj, base)
            hint = f"; register an instance, {obj.__name__}()" if a_class else ""
            raise GanlabError(f"plugin {plugin} registered {obj!r} as one of {kind}, but it is not "
                              f"{a(base.__name__)}{hint}")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise GanlabError(f"plugin {plugin} registered {kind[:-1]} name {name!r}: use lowercase letters, "
                              "digits and dashes")
        problem = _declaration_problem(obj)
        if problem:
            raise GanlabError(f"plugin {plugin} registered {kind[:-1]} {name!r}: {problem}")
        if any(key in found for key in _clashing(kind, name)):
            raise GanlabError(f"plugin {plugin} registered the name {name!r} twice; give each one its own")
        other = next((self.owner[k] for k in _clashing(kind, name) if k in self.owner), None)
        if other is not None:  # a clash: the third-party side is disabled (a built-in keeps its name)
            loser = other if _info(self.plugins, plugin).builtin and not _info(self.plugins, other).builtin else plugin
            message = (f"{kind[:-1]} name {name!r} is registered by both {other} and {plugin}; {loser} was disabled "
                       f"(or disable one yourself with {DISABLE_ENV})")
            if loser == plugin:
                raise GanlabError(message)
            for key in [key for key, owner in self.owner.items() if owner == other]:
                del self.items[key[0]][key[1]], self.owner[key]
            info = self.plugins[other]
            info.registers = {k: names for k, names in info.registers.items() if k not in KINDS}
            disable_plugin(self.pm, self.plugins, other, message)
        found[(kind, name)] = obj

    def __getattr__(self, kind: str) -> dict[str, Any]:
        """``registry.evaluators``, ``registry.datasets``, ...: name -> object of one kind."""
        if kind in KINDS:
            return self.items[kind]
        raise AttributeError(kind)

    def components(self) -> dict[str, Any]:
        """Evaluators then analyses, by name."""
        return {**self.items["evaluators"], **self.items["analyses"]}

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
    info = _info(plugins, name)
    info.error = info.error or error
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)


def _register_checked(pm: pluggy.PluginManager, module: Any, info: PluginInfo) -> None:
    try:
        pm.register(module, name=info.name)
        pm.check_pending()  # a hookimpl with no spec (a typo in a hook name) fails here
    except Exception as exc:
        if pm.is_registered(module):
            pm.unregister(module)
        info.error = f"{type(exc).__name__}: {exc}{_did_you_mean(str(exc))}"


def _load_and_register(pm: pluggy.PluginManager, ep: metadata.EntryPoint, info: PluginInfo) -> None:
    try:
        module = ep.load()
    except (Exception, SystemExit) as exc:  # kedro-style: name the plugin, keep going (argparse at import exits)
        info.error = f"import failed: {type(exc).__name__}: {exc}"
        return
    _register_checked(pm, module, info)


def _did_you_mean(message: str) -> str:
    """"; did you mean ganlab_register_evaluators?" for a hook name with a typo in ``message``."""
    specs = [name for name in dir(hookspecs) if name.startswith("ganlab_")]
    close = [match for word in re.findall(r"ganlab_\w+", message) if word not in specs
             for match in difflib.get_close_matches(word, specs, n=1)]
    return f"; did you mean {close[0]}?" if close else ""


def build_plugin_manager() -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """A plugin manager with the core modules and every enabled entry-point plugin registered."""
    from ganlab import __version__

    pm = pluggy.PluginManager("ganlab")
    pm.add_hookspecs(hookspecs)
    plugins: dict[str, PluginInfo] = {}
    disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    for name, module_name in CORE_PLUGINS.items():
        info = plugins[name] = PluginInfo(name, BUILTIN_DISTRIBUTION, __version__)
        _register_checked(pm, importlib.import_module(module_name), info)
    builtin_first = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                           key=lambda ep: getattr(ep.dist, "name", "?") != BUILTIN_DISTRIBUTION)
    for ep in builtin_first:
        distribution = getattr(ep.dist, "name", "?")
        taken = plugins.get(ep.name)
        name = ep.name if taken is None else f"{ep.name} ({distribution})"
        info = plugins[name] = PluginInfo(name, distribution, getattr(ep.dist, "version", "?"))
        if taken is not None:  # the plugin already listed keeps its name, a built-in always
            info.error = (f"its entry-point name {ep.name!r} is {taken.distribution}'s plugin's already; rename it "
                          "in its pyproject.toml")
        elif ep.name in disabled:
            info.disabled = True
        else:
            _load_and_register(pm, ep, info)
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


def collect_commands(cli: Any) -> dict[str, str]:
    """Add every plugin's click commands to ``cli``; returns command name -> plugin. Each plugin adds its
    commands to a click group of its own first; one that raises, or takes a name already used, is disabled."""
    import click

    pm, plugins = plugin_manager()
    added: dict[str, str] = {}
    for plugin in call_order(pm, ["ganlab_register_commands"]):
        group = click.Group()
        try:
            call_one(pm, plugin, "ganlab_register_commands", cli=group)
            for name in group.commands:
                if name in cli.commands:
                    raise GanlabError(f"command {name!r} of plugin {plugin} clashes with "
                                      f"{added.get(name, 'ganlab')}'s; {plugin} was disabled")
        except Exception as exc:
            disable_plugin(pm, plugins, plugin, _one_line(exc))
            continue
        for name, command in group.commands.items():
            cli.add_command(command, name)
            added[name] = plugin
        if group.commands:
            _info(plugins, plugin).registers["commands"] = list(group.commands)
    return added


def register_plugin(module: Any, name: str) -> Registry:
    """Register an extra plugin object in-process (tests, notebooks) and rebuild the registry."""
    global _plugins, _registry
    pm, plugins = _plugins = build_plugin_manager()
    plugins[name] = PluginInfo(name, "(in-process)", "-")
    _register_checked(pm, module, plugins[name])
    _registry = Registry(pm, plugins)
    return _registry


def reset() -> None:
    """Forget plugins and registry so the next call loads them afresh."""
    global _plugins, _registry
    _plugins = _registry = None
