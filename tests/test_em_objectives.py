"""EM training objectives: gem's gradient is the NLL's (Fisher's identity); ngem's gradient
with respect to the head's raw outputs is F⁻¹∇Q with F the Fisher formed independently by
autodiff (expected Hessian by an exact cubature) and a pseudo-inverse for the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import data, gmm
from grnn_jax import train as T
from grnn_jax.data import Sequences
from grnn_jax.model.heads import MixtureHead, n_head_outputs
from grnn_jax.train.em_training import em_objectives as E

pytestmark = pytest.mark.slow

K, D, H = 3, 2, 4


def _head_gmm(raw, ctype, d=D):
    """The head's own map from raw outputs to a GMM: zero kernel, bias = raw outputs."""
    head = MixtureHead(n_components=K, n_features=d, covariance_type=ctype,
                       dtype=raw.dtype, param_dtype=raw.dtype)
    h = jnp.zeros((1,), raw.dtype)
    params = {"params": {"out": {"kernel": jnp.zeros((1, raw.shape[0]), raw.dtype),
                                 "bias": raw}}}
    return head.apply(params, h)


def _blocks(ctype, d=D):
    """(logit indices, each component's own indices, the shared scale's indices or None)."""
    n_s = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1, "tied": d * (d + 1) // 2}[ctype]
    if ctype == "tied":
        comp = [K + k * d + np.arange(d) for k in range(K)]
        return np.arange(K), comp, K + K * d + np.arange(n_s)
    comp = [np.concatenate([K + k * d + np.arange(d), K + K * d + k * n_s + np.arange(n_s)])
            for k in range(K)]
    return np.arange(K), comp, None


def _oracle_step(raw, x, ctype, fisher):
    """F⁻¹∇Q per block, from autodiff of log N and its expected Hessian (exact for the
    polynomial-in-x Hessian by symmetric sigma points), and pinv for the logits."""
    g0 = _head_gmm(raw, ctype)
    gamma = jnp.exp(gmm.log_responsibilities(g0, x))
    pi = np.asarray(jnp.exp(gmm.log_weights(g0)))
    logit_idx, comp_idx, shared_idx = _blocks(ctype)
    out = np.zeros(raw.shape[0])

    def q(r):
        return jnp.sum(gamma * gmm.joint_log_prob(_head_gmm(r, ctype), x))

    grad_q = np.asarray(jax.jit(jax.grad(q))(raw))
    f_a = np.diag(pi) - np.outer(pi, pi)
    out[logit_idx] = np.linalg.pinv(f_a) @ grad_q[logit_idx] if fisher == "complete" else grad_q[logit_idx]
    # Sigma points of every component: mu_k ± sqrt(D) L_k e_i, exact up to degree 3.
    cov = np.asarray(gmm.covariances(g0))
    pts = []
    for k in range(K):
        c = {"full": lambda: cov[k], "tied": lambda: cov}.get(
            ctype, lambda: np.diag(np.broadcast_to(cov[k], (D,))))()
        ell = np.linalg.cholesky(c)
        mu = np.asarray(g0.means[k])
        pts.append([mu + s * np.sqrt(D) * ell[:, i] for i in range(D) for s in (1.0, -1.0)])
    pts = jnp.asarray(np.array(pts))  # (K, 2D, D)

    def expected_log_n(r):
        # Component k's log-density depends on its own raw outputs (and the shared scale)
        # only, so the Hessian of the sum is block-diagonal with component k's expected
        # Hessian as block k; a shared (tied) scale block sums K equal Fishers.
        lp = gmm.component_log_prob(_head_gmm(r, ctype), pts.transpose(1, 0, 2))  # (2D, K, K)
        return jnp.sum(jnp.mean(jnp.diagonal(lp, axis1=-2, axis2=-1), axis=0))

    hess = np.asarray(jax.jit(jax.hessian(expected_log_n))(raw))
    for k, idx in enumerate(comp_idx):
        fisher_k = -hess[np.ix_(idx, idx)]
        if fisher == "complete":
            fisher_k = float(pi[k]) * fisher_k
        out[idx] = np.linalg.solve(fisher_k, grad_q[idx])
    if shared_idx is not None:  # Σ_k π_k F_N = F_N under either weighting
        fisher_s = -hess[np.ix_(shared_idx, shared_idx)] / K
        out[shared_idx] = np.linalg.solve(fisher_s, grad_q[shared_idx])
    return out


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
def test_ngem_gradient_is_the_natural_step_on_raw_outputs(x64, ctype):
    rng = np.random.default_rng(1)
    n_out = n_head_outputs(K, D, ctype)
    raw = jnp.asarray(rng.normal(scale=0.5, size=n_out))
    x = jnp.asarray(rng.normal(size=D))
    for fisher in E.FISHER_WEIGHTINGS:
        def sur(r, fisher=fisher):
            return E.ngem_surrogate(_head_gmm(r, ctype), x, min_scale=1e-3, max_scale=1e3,
                                    fisher=fisher)

        got = -np.asarray(jax.jit(jax.grad(sur))(raw))
        want = _oracle_step(raw, x, ctype, fisher)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9, err_msg=fisher)


CFG = T.ModelConfig(n_features=D, n_components=K, hidden_size=H, covariance_type="full")


def _padded_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, D))
    seqs = Sequences(x, lengths=np.array([5, 3, 2]))
    b = data.batch_at(seqs, 0, batch_size=3, seed=0, dtype=np.float64)
    xb = np.array(b.x)
    short = int(np.argmin(np.asarray(b.lengths)))
    xb[short, -1] = np.nan  # padding may hold anything
    return b._replace(x=jnp.asarray(xb))


def _value_and_grad(net, name, b):
    loss_fn = T.get_objective(name).loss
    return jax.jit(jax.value_and_grad(lambda p, bb: loss_fn(net, p, {}, bb), has_aux=True))


def test_gem_gradient_equals_nll_gradient_and_ngem_reports_the_nll(x64):
    net = CFG.build()
    b = _padded_batch()
    params = net.init(jax.random.key(0), jnp.nan_to_num(b.x))
    (nll, _), g_nll = _value_and_grad(net, "nll", b)(params, b)
    (loss, m), g_gem = _value_and_grad(net, "gem", b)(params, b)
    for a, c in zip(jax.tree.leaves(g_nll), jax.tree.leaves(g_gem)):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)
    # −Q exceeds the NLL by the responsibilities' entropy (>= 0).
    assert int(m["n_obs"]) == 10 and float(loss) >= float(m["nll"]) - 1e-12
    np.testing.assert_allclose(float(m["nll"]), float(nll), rtol=1e-12)
    # ngem's value is the NLL; padding (NaN or not) reaches neither value nor gradient.
    vg = _value_and_grad(net, "ngem", b)
    (loss, m), grads = vg(params, b)
    np.testing.assert_allclose(float(loss), float(nll), rtol=1e-12)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    short = int(np.argmin(np.asarray(b.lengths)))
    b2 = b._replace(x=b.x.at[short, -2].set(7.0))
    _, grads2 = vg(params, b2)
    for a, c in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
        np.testing.assert_array_equal(a, c)
    # and the natural step differs from the plain gradient (else the test above is empty).
    assert not np.allclose(jax.tree.leaves(grads)[0], jax.tree.leaves(g_nll)[0])


def test_ngem_trains_and_resumes_exactly(tmp_path):
    objective = "ngem"
    proc = data.default_switching_ar(1)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=6)
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=6)
    cfg = T.TrainConfig(T.ModelConfig(n_features=1, n_components=2, hidden_size=4),
                        num_steps=6, batch_size=4, eval_every=3, objective=objective)
    full, hist = T.train(cfg, tr, va, tmp_path / "a", progress=False)
    T.train(cfg, tr, va, tmp_path / "b", progress=False, until_step=3)
    resumed, _ = T.train(cfg, tr, va, tmp_path / "b", progress=False)
    for a, c in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, c)
    evals = [r for r in hist if r["kind"] == "eval"]
    net, params, st, _ = T.load_trained(tmp_path / "a", which="last")
    res = T.evaluate(net, params, va, standardiser=st)
    assert np.isfinite(res.nll) and evals[-1]["val_nll"] == pytest.approx(res.nll, rel=1e-5)
    train_recs = [r for r in hist if r["kind"] == "train"]
    assert all(np.isfinite(r["nll"]) for r in train_recs)


def test_natural_steps_reject_an_unknown_weighting():
    g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
    with pytest.raises(ValueError, match="fisher"):
        E.natural_steps(g, jnp.zeros(1), min_scale=1e-3, max_scale=1e3, fisher="bogus")


def test_em_training_experiment_smoke(tmp_path):
    from experiments import em_training
    from grnn_jax.train import load_config_file

    cfg = load_config_file(em_training.DEFAULT_CONFIG.parent / "em_training_tiny.py")
    res = em_training.run(cfg, tmp_path, progress=False)
    rows = res["datasets"]["switching"]["methods"]
    assert set(rows) == {"ngem/default", "ngem/em", "ngem/default/em-head", "ngem/em/em-head"}
    assert all(np.isfinite(r["test_nll_mean"]) for r in rows.values())
    report = (tmp_path / "report.md").read_text()
    assert "| switching | ngem/em/em-head |" in report and (tmp_path / "val_nll.png").exists()


def test_em_training_experiment_datasets_flag(capsys):
    from experiments import em_training

    tiny = str(em_training.DEFAULT_CONFIG.parent / "em_training_tiny.py")
    with pytest.raises(SystemExit) as err:
        em_training.main(["--config", tiny, "--datasets", "switching,storms"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --datasets 'switching,storms': the config has switching")


def test_em_training_experiment_runs_under_sgd(tmp_path):
    from experiments import em_training
    from grnn_jax.train import load_config_file

    cfg = load_config_file(em_training.DEFAULT_CONFIG.parent / "em_training_tiny.py")
    cfg.update(heads=["mdn"], inits=["default"])
    cfg["datasets"]["switching"].update(optimizer="sgd", momentum=0.9, learning_rate=0.1)
    res = em_training.run(cfg, tmp_path, progress=False)
    (row,) = res["datasets"]["switching"]["methods"].values()
    assert np.isfinite(row["test_nll_mean"])


def test_ngem_on_a_static_mixture_is_faster_than_the_plain_gradient(tmp_path):
    # With the head on a constant input its raw outputs are the mixture's parameters, so
    # ngem is a natural-gradient step in the parameters: under SGD it must close on the EM
    # optimum in fewer steps than the plain gradient at the same learning rate.
    from experiments import ngem_static

    res = ngem_static.run(tmp_path, n=400, steps=150, seeds=1, tol=0.05, grids={"sgd": (0.1,)})
    steps = {r["method"]: r["best"]["steps_to_tol"][0] for r in res["rows"]}
    assert steps["ngem"] is not None and (steps["nll"] is None or steps["ngem"] < steps["nll"])
    gaps = [g for r in res["rows"] for g in r["best"]["final_gap"]]
    assert min(gaps) > -1e-3  # EM's maximum-likelihood fit is the optimum
    assert "| sgd | ngem | 0.1 |" in (tmp_path / "report.md").read_text()
