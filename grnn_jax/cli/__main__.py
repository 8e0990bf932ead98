"""``python -m grnn_jax.cli`` runs the ``grnn`` command."""

import sys

from grnn_jax.cli import run

sys.exit(run())
