"""``python -m grnn_jax.cli`` runs the ``grnn`` command."""

import sys

from grnn_jax.cli import main

sys.exit(main())
