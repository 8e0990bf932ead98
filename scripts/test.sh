#!/usr/bin/env bash
# Runs the whole test suite; creates .venv and installs what the tests need on first use.
GRNN_EXTRAS="test,experiments"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec python -m pytest grnn_jax tests -n "${GRNN_TEST_WORKERS:-2}" "$@"
