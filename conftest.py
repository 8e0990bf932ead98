"""Test environment, set before JAX starts: fake CPU devices for the sharding tests, fast XLA
compiles, a persistent compilation cache. Shared fixtures live in tests/conftest.py."""

import os

# The tests compile far more than they run (tiny shapes, a few steps), so two XLA:CPU settings
# trade the speed of the emitted code for compile time: LLVM's optimisation level 0, and the
# classic elemental emitters for fused loops in place of the newer MLIR fusion emitters
# (--xla_cpu_use_fusion_emitters=false, which alone cut tests/test_em.py + test_heads.py from
# 50 s to 30 s, and the whole suite from 590 s to 365 s). Neither changes what the programs
# compute beyond float rounding (no fast-math at any level): a float32 EM fit's means and an
# LSTM GRNN's gradients agree with XLA's defaults to 2e-7 of their largest entry, and its
# log-likelihood exactly. Set XLA_FLAGS to test the defaults; tests/xla_env.py hands these
# flags on to the one-device subprocesses.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("MPLBACKEND", "Agg")
# One persistent compilation cache for the test processes, the CLI subprocesses they start
# and the notebooks: many tests compile the same train steps and EM loops, and a cache hit
# skips XLA's compile (results are the same; a cache key covers the program, flags and versions).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
