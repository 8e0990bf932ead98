"""`grnn train` on two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives)."""

import json

import jax
import numpy as np
import pytest

from dirstate import tree_hash
from grnn_jax import data
from grnn_jax.cli import main
from grnn_jax.train import load_trained, read_metrics
from multiproc import assert_unreachable_coordinator_fails_fast, coordinator_flags, free_port, gloo_works, run_processes

pytestmark = pytest.mark.slow

# Each process runs the same command twice: a run, then the same command again, which
# resumes the finished run (process 0 restores the checkpoint and sends it to the other);
# then with --steps 5, which process 0's work dir refuses: every process must stop with
# status 2 (exit status 102 here), none waiting for the others.
LAUNCH = """import sys
from grnn_jax.cli import main
a = sys.argv[1:]
sys.exit(main(a) or main(a) or 100 + main(a + ["--steps", "5"]))
"""


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    proc = data.default_switching_ar(1)
    seqs, _ = data.sample_switching_ar(proc, seed=0, n_sequences=30, length=6)
    path = tmp_path_factory.mktemp("mht") / "d.npz"
    np.savez(path, x=seqs.x, lengths=seqs.lengths)
    return path


def flags(path):
    return ["train", "--data", str(path), "--hidden", "4", "-k", "2", "--steps", "4",
            "--batch-size", "8", "--lr", "0.03", "--set", "eval_every=2", "--set", "log_every=1",
            "--json", "--quiet"]


def test_two_processes_train_as_one(npz, tmp_path, capsys):
    port = free_port()
    # Each process its own work dir: process 1 must write nothing at all.
    res = run_processes(LAUNCH, [[*flags(npz), "--workdir", str(tmp_path / f"w{i}"),
                                  *coordinator_flags(port, 2, i)] for i in range(2)])
    if any(rc != 102 for rc, _, _ in res):
        reason = gloo_works()
        if reason:
            pytest.skip(reason)
    for rc, _, err in res:
        assert rc == 102, err[-3000:]
        assert "holds a run" in err and "4 -> 5" in err, err[-3000:]
    outs = [(o, e) for _, o, e in res]
    assert outs[1][0] == "" and not (tmp_path / "w1").exists()
    first, resumed = (json.loads(line) for line in outs[0][0].splitlines())
    assert first["num_processes"] == 2 and first["devices"] == 2
    assert resumed["best_val_nll"] == first["best_val_nll"] and resumed["steps"] == 4

    assert main([*flags(npz), "--workdir", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["num_processes"] == 1 and one["devices"] == 1
    np.testing.assert_allclose(first["best_val_nll"], one["best_val_nll"], rtol=1e-5)
    losses = [[r.get("loss", r.get("val_nll")) for r in read_metrics(tmp_path / w)] for w in ("w0", "one")]
    np.testing.assert_allclose(*losses, rtol=1e-5)
    assert len(losses[0]) == 6  # 4 train records, 2 evaluations
    _, p2, _, _ = load_trained(tmp_path / "w0")
    _, p1, _, _ = load_trained(tmp_path / "one")
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_launches_fail_fast_and_write_nothing(npz, tmp_path, capsys):
    (tmp_path / "w").mkdir()
    before = tree_hash(tmp_path)
    base = [*flags(npz), "--workdir", str(tmp_path / "w")]
    assert_unreachable_coordinator_fails_fast(base, capsys)
    for extra, message in (
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id 2 must be in 0..1 for --num-processes 2"),
        (["--coordinator", "127.0.0.1:1", "--process-id", "0"], "needs all of --coordinator"),
        (["--population", "2", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"],
         "--population runs in one process"),
        (["--population", "2", "--data-parallel", "--batch-size", "6"],  # 2 groups of 4 devices
         "--batch-size (batch_size) 6 must be a multiple of the 4 devices that share every member's batch"),
        # 8 fake devices share every batch here.
        (["--data-parallel", "--batch-size", "6"],
         "--batch-size (batch_size) 6 must be a multiple of the 8 devices that share every batch"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert tree_hash(tmp_path) == before
