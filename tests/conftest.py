"""Fixtures shared by the tests: float64 on demand, and a count of a jitted function's
compilations through JAX's public monitoring events (no private jit internals)."""

from collections import Counter

import jax
import pytest

# JAX reports each trace and each lowering of a jitted function as a duration event carrying
# the function's name (``f`` for the trace, ``jit(f)`` for the lowering), whether or not the
# persistent compilation cache then skips XLA's compile. A call that reuses a compiled program
# reports neither.
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_COMPILES: Counter = Counter()
_listening = False


def _on_event(event, _duration, **kwargs):
    if event in (_TRACE, _LOWER):
        name = str(kwargs.get("fun_name", ""))
        _COMPILES[name[4:-1] if name.startswith("jit(") and name.endswith(")") else name] += 1


def _listen():
    """Registers the listener once per process, after checking that it sees a compilation."""
    global _listening
    if _listening:
        return
    jax.monitoring.register_event_duration_secs_listener(_on_event)
    _listening = True

    def _compile_probe(v):
        return v + 1

    jax.jit(_compile_probe)(1.0)
    if not _COMPILES["_compile_probe"]:
        raise RuntimeError(f"jax {jax.__version__} no longer reports the events {_TRACE!r} and "
                           f"{_LOWER!r} with fun_name: update the compilation count in tests/conftest.py")


@pytest.fixture
def x64():
    """Runs the test with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def compilations():
    """``compilations(f)`` starts counting the traces and lowerings of the jitted ``f`` (by
    its name) and returns a function that gives the count since then; 0 means every call in
    between reused a compiled program.

    Example: ``count = compilations(step); step(a); assert count() == 0``.
    """
    _listen()

    def start(fun):
        name = getattr(fun, "__name__", None)
        if not name:
            raise TypeError(f"{fun!r} has no __name__ to count compilations by")
        base = _COMPILES[name]
        return lambda: _COMPILES[name] - base

    return start
