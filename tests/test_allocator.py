"""keep_freed_memory (as GRNN_KEEP_FREED_MEMORY=1 asks for it): a step's large temporary
buffer is reused instead of being page-faulted in afresh every call (the page-fault counter
of the process is the oracle); unasked, nothing changes."""

import os
import subprocess
import sys

import pytest

from grnn_jax._util.allocator import ENV_SWITCH

pytestmark = pytest.mark.slow

# A jitted step whose 3000 x 3000 float32 intermediate (36 MB, above glibc's largest mmap
# threshold; the input of a second matmul, so it cannot be fused away) is an XLA temporary
# buffer, allocated and freed at every call.
_STEP = """
import resource
from grnn_jax._util.allocator import keep_freed_memory_if_asked
applied = keep_freed_memory_if_asked()
import jax, jax.numpy as jnp
step = jax.jit(lambda a: jnp.sum(jnp.tanh(a @ a.T) @ a))
a = jnp.ones((3000, 8))
for _ in range(2):
    step(a).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step(a).block_until_ready()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


def _faults_per_call(switch: str) -> tuple[bool, float]:
    env = dict(os.environ, **{ENV_SWITCH: switch})
    out = subprocess.run([sys.executable, "-c", _STEP], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    applied, kept = _faults_per_call("1")
    if not applied:
        pytest.skip("not glibc")
    off, default = _faults_per_call("")  # unset: nothing changes
    assert not off
    pages = 3000 * 3000 * 4 / 4096  # the buffer's pages: ~8,800
    assert default > 0.8 * pages  # the default allocator maps it afresh every call
    assert kept < 0.05 * pages
