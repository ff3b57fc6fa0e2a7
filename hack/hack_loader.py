"""The one loader of hack/ scripts: ``load_hack("localcluster")``.

hack/ holds scripts, not a package. Each is loaded by path, once, as ``ftj_hack_<name>``, so a
stray top-level module of the same name (``tools``, ``images``) never wins, and the tests, the
benches and the scripts themselves share one copy of each (one ``tools`` cache, one ``localcluster``).

Whoever imports this module has hack/ on ``sys.path``: a script run as ``python hack/x.py`` has it
first; tests (tests/helpers.py) and benches append it before importing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HACK = Path(__file__).resolve().parent


def load_hack(name: str) -> ModuleType:
    """hack/<name>.py, loaded on first use and registered before it runs (dataclasses look it up)."""
    key = f"ftj_hack_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HACK / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"no hack script {HACK / name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
