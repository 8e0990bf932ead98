"""Host devices asked for before JAX starts: granted in a fresh process, refused where the
user fixed the count or the backend has started. The "has JAX started" probe uses only
public JAX (JAX's refusal to change ``jax_num_cpu_devices`` once started): the fresh-process
test below fails if a JAX release changes that rule."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grnn_jax._util.cpu_devices import backends_started, population_host_devices, request_cpu_devices
from xla_env import one_device_xla_flags

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import jax; from grnn_jax._util.cpu_devices import request_cpu_devices; "
         "print(request_cpu_devices(3), len(jax.devices('cpu')))")
# Before the backends start the probe says so and leaves the option as it was (-1: unset);
# after jax.devices() it says started, and a second request is refused.
STARTED = ("import jax; from grnn_jax._util.cpu_devices import backends_started as b, "
           "request_cpu_devices as r; before = b(); opt = jax.config.jax_num_cpu_devices; "
           "n = len(jax.devices('cpu')); print(before, opt, n, b(), r(2), jax.config.jax_num_cpu_devices)")


def _probe(xla_flags: str, code: str = PROBE) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.slow
def test_fresh_process_gets_the_devices_and_a_user_count_wins():
    assert _probe(one_device_xla_flags()) == "True 3"
    assert _probe(one_device_xla_flags() + " --xla_force_host_platform_device_count=2") == "False 2"


def test_backends_started_probe_in_a_fresh_process():
    assert _probe(one_device_xla_flags(), STARTED) == "False -1 1 True False -1"


def test_started_backend_and_bad_counts():
    import jax

    n = len(jax.devices())
    assert backends_started()
    assert request_cpu_devices(2) is False and len(jax.devices()) == n
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            request_cpu_devices(bad)
    assert [population_host_devices(p, cores=4) for p in (1, 2, 3, 6, 8)] == [1, 2, 1, 2, 4]
