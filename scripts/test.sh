#!/usr/bin/env bash
# Runs the whole test suite; creates .venv and installs what the tests need on first use.
GRNN_EXTRAS="test,experiments"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# worksteal: a worker that runs out of tests takes queued ones from the other, so a few long
# tests at the end do not leave one core idle.
exec python -m pytest grnn_jax tests -n "${GRNN_TEST_WORKERS:-2}" --dist worksteal "$@"
