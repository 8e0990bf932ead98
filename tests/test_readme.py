"""The README's Python blocks run as written, in order, in one fresh interpreter; then the
shell blocks marked ``<!-- runs`` run in the same folder (the commands a new user types)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xla_env import one_device_xla_flags

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def marked_shell_blocks(text: str) -> list[str]:
    return re.findall(r"^<!-- runs[^\n]*-->\n```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    blocks = python_blocks("a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = x\n```\n")
    assert blocks == ["x = 1\n", "y = x\n"]


def test_readme_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    script = tmp_path / "readme.py"
    # Each block is marked so that a failure names it.
    script.write_text("".join(f"# --- README block {i + 1}\n{b}" for i, b in enumerate(blocks)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = one_device_xla_flags()  # one CPU device, as a user has
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    shell = marked_shell_blocks((ROOT / "README.md").read_text())
    assert shell, "the README's CSV example should be marked to run"
    bin_dir = str(Path(sys.executable).parent)  # where the package's `grnn` is installed
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    for block in shell:
        out = subprocess.run(["bash", "-ec", block], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, block + out.stderr[-3000:]
