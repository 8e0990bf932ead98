"""The package layout's rules: imports flow one way, module names are unique, the face is lazy.

Layers, top to bottom: ``_util < gmm < em < data < model < train < cli``. A module may import
from its own layer and the layers above it, never from one below (lazy imports inside
functions count too). ``experiments/`` and ``scripts/`` use public names only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "grnn_jax"
LAYERS = ("_util", "gmm", "em", "data", "model", "train", "cli")
# The package's two faces sit beside the layers: `runtime` re-exports `_util`'s process
# settings, `__init__` loads the namespaces lazily.
FACES = {"grnn_jax": len(LAYERS), "grnn_jax.runtime": 0}
# Third-party packages a layer must not know (DESIGN.md: no Flax or Optax in gmm/em/data).
FORBIDDEN = {"gmm": {"flax", "optax", "orbax"}, "em": {"flax", "optax", "orbax"},
             "data": {"flax", "optax", "orbax"}, "model": {"optax", "orbax"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every imported module name (``from a.b import c`` gives ``a.b`` and ``a.b.c``), with line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def _layer(module: str) -> int | None:
    """The layer index of a grnn_jax module, None for a name that is not one."""
    if module in FACES:
        return FACES[module]
    parts = module.split(".")
    if parts[0] != "grnn_jax" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _library_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_sits_in_a_layer_or_is_a_face():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(loose) <= 4, f"more than four loose modules at the root: {loose}"
    for path in _library_files():
        assert _layer(_module_name(path)) is not None, f"{path} is in no layer"


def test_imports_flow_one_way():
    upward = []
    for path in _library_files():
        own = _layer(_module_name(path))
        for name, line in _imports(path):
            target = _layer(name)
            if target is not None and target > own and name != "grnn_jax":
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_lower_layers_know_no_training_libraries():
    found = []
    for path in _library_files():
        layer = _module_name(path).split(".")[1] if "." in _module_name(path) else ""
        for name, line in _imports(path):
            if name.split(".")[0] in FORBIDDEN.get(layer, ()):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not found, "\n".join(found)


def test_module_names_are_unique():
    names = Counter(p.stem for p in _library_files() if p.stem not in ("__init__", "__main__"))
    clashes = sorted(n for n, c in names.items() if c > 1)
    # A module may share its name with a package face only where it *is* that idea's home.
    assert not clashes, f"module names used twice: {clashes}"


@pytest.mark.parametrize("folder", ["experiments", "scripts"])
def test_experiments_and_scripts_use_public_names(folder):
    private = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] == "grnn_jax" and (
                    "cli" in parts or any(p.startswith("_") for p in parts[1:])):
                private.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not private, "\n".join(private)


def test_import_grnn_jax_is_lazy_and_data_loads_no_network_code():
    probe = ("import sys, grnn_jax; lazy = 'jax' not in sys.modules; "
             "import grnn_jax.data; print(lazy, 'flax' in sys.modules, 'grnn_jax.model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_face_gives_the_namespaces():
    import grnn_jax

    assert grnn_jax.train.TrainConfig is not None and grnn_jax.gmm.m_step is not None
    assert grnn_jax.GaussianMixture.__module__ == "grnn_jax.em.estimator"
    with pytest.raises(AttributeError, match="no attribute 'training'"):
        grnn_jax.training  # noqa: B018
