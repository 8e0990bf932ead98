"""Local multi-process launches for the multi-host tests (jax.distributed on 127.0.0.1, gloo)."""

import os
import socket
import subprocess
import sys
import time

from grnn_jax.cli import main
from xla_env import one_device_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    """One CPU device per process, this checkout first on the path."""
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=one_device_xla_flags(),
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_processes(script: str, argvs, timeout: float = 150):
    """Runs ``python -c script *argv`` for every argv at once; returns their (rc, stdout, stderr).

    Every process is killed if the whole launch takes longer than ``timeout`` seconds.
    """
    procs = [subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env()) for argv in argvs]
    deadline = time.monotonic() + timeout
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(deadline - time.monotonic(), 1))
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def coordinator_flags(port: int, n: int, i: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i),
            "--timeout", "30"]


def gloo_works() -> str | None:
    """None if two processes can run a gloo all-gather here, else why not."""
    code = ("import sys, jax; jax.config.update('jax_cpu_collectives_implementation', 'gloo');"
            "jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), initialization_timeout=20);"
            "from jax.experimental import multihost_utils as m; import numpy as np;"
            "print(m.process_allgather(np.ones(1)).sum())")
    port = free_port()
    try:
        outs = run_processes(code, [[f"127.0.0.1:{port}", str(i)] for i in range(2)], timeout=60)
    except subprocess.TimeoutExpired:
        return "two processes did not finish a gloo all-gather within 60 s"
    if any(rc for rc, _, _ in outs) or any("2.0" not in o for _, o, _ in outs):
        return "gloo CPU collectives failed here: " + outs[0][2][-300:]
    return None


def assert_unreachable_coordinator_fails_fast(argv, capsys) -> None:
    """``grnn argv`` joining a coordinator nobody listens at exits 2 within 10 s, saying so."""
    port = free_port()
    t = time.monotonic()
    assert main([*argv, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", "1", "--timeout", "1"]) == 2
    assert time.monotonic() - t < 10
    assert f"cannot reach the coordinator 127.0.0.1:{port} within 1 s" in capsys.readouterr().err
