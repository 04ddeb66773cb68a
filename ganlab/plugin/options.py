"""Component options: a component's ``options`` maps each name to its default, or to an ``Option`` that adds
help text, choices and a range. ``--set NAME.OPTION=VALUE`` values arrive as strings and are turned into the
default's type; every value is checked before any component runs, so a typo fails in a second, not after an hour.
"""
import difflib
import math
from dataclasses import dataclass
from typing import Any

from ganlab.errors import GanlabError, a


@dataclass(frozen=True)
class Option:
    """A declared option: ``options = {"steps": Option(8, "frames between two points", min=2)}``. ``choices`` (of
    each item, for a list), ``min``/``max`` (inclusive) and ``of`` (a kind such as "detectors" whose registered names
    the value must be) are checked before anything runs; ``ctx.options`` holds the plain value, never the ``Option``."""

    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    of: str | None = None

    def check(self, value: Any, where: str) -> None:
        """A one-line ``GanlabError`` when ``value`` breaks a declared rule."""
        about = f" ({self.help})" if self.help else ""
        many = isinstance(value, (list, tuple))
        items = [v for v in value if v != ""] if many else [value]  # '': none of a list
        shown = ",".join(map(str, value)) if many else value  # as it was typed
        if self.choices is not None and any(item not in self.choices for item in items):
            raise GanlabError(f"--set {where}={shown}: choose one of {', '.join(map(str, self.choices))}{about}")
        for item in items:  # each number of a list, too (a C grid)
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                continue
            broken = ("must be a finite number" if isinstance(item, float) and not math.isfinite(item)
                      else f"must be >= {self.min:g}" if self.min is not None and item < self.min
                      else f"must be <= {self.max:g}" if self.max is not None and item > self.max else None)
            if broken:
                raise GanlabError(f"--set {where}={shown}: {'each value ' if many else ''}{broken}{about}")


def check_names(option: Option, value: Any, where: str, known: dict[str, Any]) -> None:
    """A one-line ``GanlabError`` when ``value`` names something of ``option.of`` that is not in ``known``."""
    items = value if isinstance(value, (list, tuple)) else [value]
    unknown = [str(item) for item in items if item not in ("", None) and item not in known]
    if unknown:
        close = sorted(name for name in known if unknown[0] in name) or difflib.get_close_matches(unknown[0], known)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise GanlabError(f"--set {where}={value}: no {option.of.replace('_', ' ')[:-1]} named {unknown[0]!r}{hint}; "
                          f"available: {', '.join(sorted(known)) or 'none'}")


def declared(value: Any) -> Option:
    """Any entry of a component's ``options`` as an ``Option`` (a plain default has no help and no checks)."""
    return value if isinstance(value, Option) else Option(value)


def describe(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> {default, type, help, choices, min, max}, for ``ganlab components``."""
    specs = {name: declared(value) for name, value in options.items()}
    return {name: {**vars(spec), "type": type(spec.default).__name__,
                   "choices": list(spec.choices) if spec.choices is not None else None} for name, spec in specs.items()}


def parse_settings(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["svm-probe.draws=5"]`` -> ``{"svm-probe.draws": "5"}``."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise GanlabError(f"--set {pair!r}: expected COMPONENT.OPTION=VALUE, e.g. --set svm-probe.draws=5")
        settings[key.strip()] = value.strip()
    return settings


def coerce(value: Any, default: Any, where: str) -> Any:
    """Turn a CLI string into the type of the option's default, as click converts a typed parameter (a list
    default: comma-separated items of its first item's type)."""
    import click

    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    many = isinstance(default, (list, tuple))
    convert = click.types.convert_type(type(default[0] if default else "") if many else type(default))
    try:
        return type(default)(map(convert, value.split(","))) if many else convert(value)
    except click.BadParameter:
        raise GanlabError(f"--set {where}={value}: expected {a(type(default).__name__)} like {default!r}") from None


def resolve_options(component: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The component's defaults, overridden by ``settings`` for its own name, coerced and checked."""
    declared_options = {name: declared(value) for name, value in component.options.items()}
    options = {name: option.default for name, option in declared_options.items()}
    prefix = component.name + "."
    for key, value in settings.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in options:
            known = ", ".join(sorted(options)) or "none"
            raise GanlabError(f"--set {key}: {component.name} has no option {name!r} (options: {known})")
        options[name] = coerce(value, options[name], key)
        declared_options[name].check(options[name], key)
    return options
