# Sourced by the entry-point scripts: creates a virtual environment on first use and installs
# the package with the extras named in $GRNN_EXTRAS into it.
#   GRNN_VENV    where (default .venv)
#   GRNN_LOWEST  1: the lowest versions pyproject.toml allows for its direct dependencies
#                (uv's --resolution lowest-direct; uv itself is installed into the venv),
#                to test the declared floors. Give it its own GRNN_VENV.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GRNN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
LOWEST="${GRNN_LOWEST:-0}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
STAMP="$VENV/.grnn_installed_${GRNN_EXTRAS//,/_}"
[ "$LOWEST" = 1 ] && STAMP="${STAMP}_lowest"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    if [ "$LOWEST" = 1 ]; then
        [ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install --quiet uv
        "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --resolution lowest-direct \
            -e "$ROOT[$GRNN_EXTRAS]"
    else
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$GRNN_EXTRAS]"
    fi
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
