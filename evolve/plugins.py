"""What an application built on `evolve` adds to the command line: its commands, its default task, and
the `run` flags that set that task's options.

`evolve` knows no problem. An application (the EPLB evaluator is one) declares a `Plugin` and names it in
its `pyproject.toml` under the entry-point group `evolve.plugins`:

    [project.entry-points."evolve.plugins"]
    myproblem = "mypackage.plugin:PLUGIN"

The `eplb-evolve` command then lists the plugin's command modules beside evolve's own, `task.factory`
defaults to the plugin's factory, and `run` gets the plugin's task flags. With no plugin installed the
command still has evolve's own commands (apply, diff, run, runs, show, report, ui), and a config names its
task.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib import metadata

GROUP = "evolve.plugins"

# evolve's own command modules: each exposes `register(subparsers)`
EVOLVE_COMMANDS = ("evolve.patch_cli", "evolve.campaign_cli", "evolve.runs_cli")
LAST_COMMANDS = ("evolve.report_cli", "evolve.ui.cli")  # listed after every plugin's commands


@dataclass(frozen=True)
class TaskFlag:
    """A `run` flag that sets one task option: `--dataset NAME` is `--set task.options.dataset=NAME`."""

    flag: str  # e.g. "--dataset"
    option: str  # the key under [task.options]
    help: str
    metavar: str = "VALUE"


@dataclass(frozen=True)
class Plugin:
    """An application's additions. `first_commands` are listed before evolve's own commands, `commands`
    after them; `task_factory` is the import string `task.factory` defaults to; `report_extension` is
    the import string of its `evolve.report_cli.ReportExtension` (its flags and sections of `report`)."""

    name: str
    first_commands: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    task_factory: str = ""
    task_flags: tuple[TaskFlag, ...] = ()
    report_extension: str = ""


@functools.lru_cache(maxsize=1)
def installed() -> tuple[Plugin, ...]:
    """The plugins the installed distributions declare, in name order. One that fails to load is left out
    with a one-line warning, so a broken application never takes evolve's own commands down with it."""
    found = []
    for entry in _entry_points():
        try:
            plugin = entry.load()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported the same way
            print(f"warning: evolve plugin {entry.name} ({entry.value}) did not load: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            continue
        if not isinstance(plugin, Plugin):
            print(f"warning: evolve plugin {entry.name} ({entry.value}) is a {type(plugin).__name__}, not an "
                  "evolve.plugins.Plugin; left out", file=sys.stderr)
            continue
        found.append(plugin)
    return tuple(found)


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points over every distribution found, not only the first of each name:
    a stale `*.egg-info` left in a source checkout would otherwise hide the installed metadata."""
    seen: dict[tuple[str, str], metadata.EntryPoint] = {}
    for dist in metadata.distributions():
        for entry in dist.entry_points:
            if entry.group == GROUP:
                seen.setdefault((entry.name, entry.value), entry)
    return [seen[key] for key in sorted(seen)]


def command_modules(plugins: tuple[Plugin, ...] | None = None) -> list[str]:
    """Every command module, in the order `--help` lists them."""
    plugins = installed() if plugins is None else plugins
    return [*(m for p in plugins for m in p.first_commands), *EVOLVE_COMMANDS,
            *(m for p in plugins for m in p.commands), *LAST_COMMANDS]


def default_task_factory() -> str:
    """The first plugin's task factory; empty when no plugin names one (a config must then)."""
    return next((p.task_factory for p in installed() if p.task_factory), "")


def task_flags() -> tuple[TaskFlag, ...]:
    """The `run` flags every plugin adds for its task's options."""
    return tuple(flag for p in installed() for flag in p.task_flags)
