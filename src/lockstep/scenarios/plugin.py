"""The system's scenario plugin (spec §1 "plugin"): the module `[scenarios] plugin` names, imported
from the integration repo, giving its checks, its setup items for Configure and an optional
version probe."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from lockstep.errors import ConfigError
from lockstep.scenarios.check import Check, Step, StepContext, check_step, is_abstract

VersionProbe = Callable[[StepContext], "str | None"]
"""Reports the version an instance runs (called after a plain Start reaches IsLeader)."""


@dataclass(frozen=True)
class SetupItem:
    """One piece of one-time system setup (an account, a grant, a limit…): Configure applies
    it once per run, as a step, and records its `name`."""

    name: str
    apply: Step


@dataclass
class Plugin:
    """What the plugin module provides; the empty plugin has no checks, items or probe."""

    checks: list[type[Check]] = field(default_factory=list)
    setup_items: list[SetupItem] = field(default_factory=list)
    version_probe: VersionProbe | None = None
    module: str | None = None


def load_plugin(module: str | None, search_path: Path) -> Plugin:
    """Import `module` with `search_path` (the integration repo) first on sys.path; the empty
    Plugin when `module` is None. A missing or broken module is a ConfigError (exit 2)."""
    if module is None:
        return Plugin()
    hint = (f"[scenarios] plugin must name a module importable from {search_path}, "
            "e.g. checks/__init__.py for plugin = \"checks\"")
    path = str(search_path)
    sys.path.insert(0, path)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise ConfigError(f"scenarios plugin {module!r} not found in {search_path}",
                              hint) from None
        raise ConfigError(f"scenarios plugin {module!r} is broken: cannot import {exc.name!r}",
                          "fix the plugin's imports") from None
    except Exception as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"scenarios plugin {module!r} is broken: {type(exc).__name__}: "
                          f"{first}", f"import it by hand to see the traceback: "
                          f"cd {search_path} && python -c 'import {module}'") from None
    finally:
        if sys.path and sys.path[0] == path:
            del sys.path[0]
    return plugin_of(mod)


def plugin_of(mod: ModuleType) -> Plugin:
    """The checks (every non-abstract Check subclass the module holds), `SETUP_ITEMS` and
    `version_probe` of an imported plugin module."""
    name = mod.__name__
    checks = [obj for obj in vars(mod).values()
              if inspect.isclass(obj) and issubclass(obj, Check) and not is_abstract(obj)]
    raw = getattr(mod, "SETUP_ITEMS", [])
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"scenarios plugin {name!r}: SETUP_ITEMS is a {type(raw).__name__}",
                          "make it a list of lockstep.scenarios.plugin.SetupItem")
    items: list[SetupItem] = []
    for item in raw:
        if not isinstance(item, SetupItem):
            raise ConfigError(f"scenarios plugin {name!r}: SETUP_ITEMS holds {item!r:.60}",
                              "each entry must be a SetupItem(name, step)")
        check_step(item.name, "SETUP_ITEMS", item.apply)
        items.append(item)
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"scenarios plugin {name!r}: two setup items share a name",
                          "Configure records items by name; make them unique")
    probe = getattr(mod, "version_probe", None)
    if probe is not None and not callable(probe):
        raise ConfigError(f"scenarios plugin {name!r}: version_probe is not callable",
                          "define def version_probe(ctx) -> str")
    return Plugin(checks, items, probe, name)
