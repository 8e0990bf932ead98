"""The docs site builds strictly, its guide's code runs, and its pointers lead somewhere.

* ``python -m mkdocs build --strict`` (the command the README gives) succeeds with no
  warning: no broken link or anchor, no page outside the navigation, no docstring naming a
  parameter its function lacks; the CLI page holds every ``grnn`` sub-command's help.
* The Python blocks of each user-guide page run as written, in order, in one fresh
  interpreter per page (as tests/test_readme.py does for the README).
* The README's links into the repository exist, and every new name on "Where did it move"
  imports.
"""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xla_env import one_device_xla_flags

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE_PAGES = sorted((DOCS / "guide").glob("*.md"))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _subcommands() -> list[str]:
    import argparse

    from grnn_jax.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    raise AssertionError("the grnn parser has no sub-commands")


@pytest.mark.slow
def test_strict_build_has_no_warning_and_the_generated_pages(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    cli = (site / "guide" / "cli" / "index.html").read_text()
    for name in _subcommands():
        assert f"usage: grnn {name}" in cli, f"the CLI page lacks grnn {name}'s help"
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / nb.stem / "index.html").is_file(), nb.name
        assert (site / "notebooks" / nb.name).is_file(), nb.name
    assert "::: grnn_jax" not in (site / "api" / "em" / "index.html").read_text()


def test_guide_pages_are_found():
    names = {p.name for p in GUIDE_PAGES}
    assert {"gmm-and-em.md", "grnn.md", "cli.md", "data_format.md"} <= names
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n") == ["x = 1\n"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in GUIDE_PAGES if python_blocks(p.read_text())],
                         ids=lambda p: p.stem)
def test_guide_python_blocks_run_in_order(page, tmp_path):
    blocks = python_blocks(page.read_text())
    script = tmp_path / "page.py"
    script.write_text("".join(f"# --- {page.name} block {i + 1}\n{b}" for i, b in enumerate(blocks)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    env["XLA_FLAGS"] = one_device_xla_flags()  # one CPU device, as a reader has
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_readme_links_into_the_repository_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert local, "the README links nowhere into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _resolves(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ModuleNotFoundError:
        module, _, attr = name.rpartition(".")
        try:
            return hasattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:
            return False


def test_every_new_name_on_the_moved_page_imports():
    rows = [line.split("|") for line in (DOCS / "developer" / "moved.md").read_text().splitlines()]
    new = [re.search(r"`([^`]+)`", r[2]).group(1) for r in rows
           if len(r) > 3 and r[2].strip().startswith("`grnn_jax")]
    assert len(new) > 40
    missing = [n for n in new if not _resolves(n)]
    assert not missing, f"names on docs/developer/moved.md that do not import: {missing}"


def test_grouped_arguments_are_split_per_name():
    pytest.importorskip("griffe", reason="the docs extra is not installed (scripts/test.sh --lowest)")
    spec = importlib.util.spec_from_file_location("griffe_docstrings", DOCS / "hooks" / "griffe_docstrings.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    doc = "Fits.\n\nArgs:\n  x: (N, D) rows.\n  tol, reg_covar: as in fit,\n    both floats.\n\nReturns:\n  a, b: not args.\n"
    assert hook.split_grouped_args(doc) == (
        "Fits.\n\nArgs:\n  x: (N, D) rows.\n  tol: as in fit,\n    both floats.\n"
        "  reg_covar: as in fit,\n    both floats.\n\nReturns:\n  a, b: not args.\n")
