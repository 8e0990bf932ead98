"""MkDocs hook: renders ``notebooks/*.ipynb`` as pages ``notebooks/<name>.md``.

The notebooks are stored without outputs and executed by ``tests/test_notebooks.py``; the
docs show their text and code as they are (nothing is executed at build time, so the build
stays fast and needs no kernel), and offer the ``.ipynb`` itself for download. Only the
standard library reads them: a notebook is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from mkdocs.structure.files import File

NOTE = ('!!! note "Run it yourself"\n'
        "    Stored without outputs; `tests/test_notebooks.py` executes it. "
        "[Download the notebook]({name}) or open `notebooks/{name}` from the repository in "
        "Jupyter (`pip install -e \".[test]\"` brings `ipykernel`).\n")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return ("".join(src) if isinstance(src, list) else src).rstrip()


def render(path: Path) -> str:
    """The notebook at ``path`` as markdown: markdown cells as they are, code cells fenced."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    out, noted = [], False
    for cell in cells:
        text = _source(cell)
        if not text:
            continue
        if cell["cell_type"] == "markdown":
            out.append(text)
        elif cell["cell_type"] == "code":
            out.append(f"```python\n{text}\n```")
        if not noted and out:  # after the title cell
            out.append(NOTE.format(name=path.name))
            noted = True
    return "\n\n".join(out) + "\n"


def on_files(files, config):
    root = Path(config.config_file_path).parent / "notebooks"
    notebooks = sorted(root.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks in {root}")
    for nb in notebooks:
        files.append(File.generated(config, f"notebooks/{nb.stem}.md", content=render(nb)))
        files.append(File.generated(config, f"notebooks/{nb.name}", content=nb.read_bytes()))
    return files
