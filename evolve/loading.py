"""Import strings from configs (`package.module:name` or `path/to/file.py:name`) resolved to objects.

Kept apart from `config` so that plug-in registries (backends, proposers) and the config can both use
it without importing each other.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from evolve.errors import UserError


def load_object(spec: str, what: str) -> Any:
    """Resolve an import string from a config: `package.module:name` or `path/to/file.py:name`."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{what}: '{spec}' is not an import string; write module:name or file.py:name")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise UserError(f"{what}: file {module_name} does not exist; check the path in '{spec}'")
            unique = f"_evolve_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            module = sys.modules.get(unique)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(unique, path)
                module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
                sys.modules[unique] = module
                loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what}: cannot import '{module_name}' ({exc}); check the import string '{spec}'") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{what}: '{module_name}' has no '{attr}'; check the import string '{spec}'") from None


def read_text_file(path: str | Path, what: str) -> str:
    """A file a user gave (config, program) as UTF-8 text, or a one-line `UserError` naming it and the fix."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None
