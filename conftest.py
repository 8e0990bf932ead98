"""Test environment, set before JAX starts: fake CPU devices for the sharding tests, fast XLA
compiles, a persistent compilation cache. Shared fixtures live in tests/conftest.py."""

import os

# The tests compile far more than they run (tiny shapes, a few steps): LLVM's optimisation
# level 0 for the code XLA:CPU emits cuts the tests' CPU time by about a quarter and leaves
# what the programs compute alone up to float rounding (no fast-math at any level; a float32
# EM fit and LSTM gradients agree with the default level's to a few ulps, <= 1.2e-6). Set XLA_FLAGS to
# test the default level; tests/xla_env.py hands this flag on to the one-device subprocesses.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("MPLBACKEND", "Agg")
# One persistent compilation cache for the test processes, the CLI subprocesses they start
# and the notebooks: many tests compile the same train steps and EM loops, and a cache hit
# skips XLA's compile (results are the same; a cache key covers the program, flags and versions).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
