#!/usr/bin/env bash
# Runs the tests; creates the virtual environment and installs what the tests need on first use.
#   bash scripts/test.sh            the whole suite (what CI runs)
#   bash scripts/test.sh --fast     the fast tier: tests not marked `slow` (the edit loop)
#   bash scripts/test.sh --lowest   the fast tier at the lowest versions pyproject.toml allows,
#                                   in its own environment (.venv-lowest)
# Other arguments go to pytest, e.g. `bash scripts/test.sh --fast tests/test_gmm.py -x`; paths
# among them replace the default `grnn_jax tests`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GRNN_EXTRAS="test,experiments,docs"
TIER=()
ARGS=()
DEFAULT_PATHS=1
for arg in "$@"; do
    path="${arg%%::*}"  # a test id's file
    if [ -n "$path" ] && { [ -e "$ROOT/$path" ] || [[ "$path" = /* && -e "$path" ]]; }; then
        DEFAULT_PATHS=0
    fi
    case "$arg" in
        --fast) TIER=(-m "not slow") ;;
        --lowest)
            TIER=(-m "not slow")
            export GRNN_LOWEST=1 GRNN_VENV="${GRNN_VENV:-$ROOT/.venv-lowest}"
            GRNN_EXTRAS="test,experiments,bench" ;;
        *) ARGS+=("$arg") ;;
    esac
done
PATHS=()
[ "$DEFAULT_PATHS" = 1 ] && PATHS=(grnn_jax tests)
source "$ROOT/scripts/_venv.sh"
if [ "${GRNN_LOWEST:-0}" = 1 ]; then
    python -c 'import importlib.metadata as m; print("lowest versions:", ", ".join(f"{p} {m.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "orbax-checkpoint", "scikit-learn", "scipy")))'
fi
# worksteal: a worker that runs out of tests takes queued ones from the other, so a few long
# tests at the end do not leave one core idle. --reruns 1: a worker has twice died of a
# segfault inside XLA's compiler on a test that passes alone (docs/developer/testing.md);
# pytest-rerunfailures runs such a test once more on a fresh worker, and the summary counts
# every rerun, so a test that fails twice still fails the run.
exec python -m pytest "${PATHS[@]}" -n "${GRNN_TEST_WORKERS:-2}" --dist worksteal --reruns 1 \
    "${TIER[@]}" "${ARGS[@]}"
