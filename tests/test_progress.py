"""The training loops' progress display: a tqdm bar on a terminal, and off one (a log file, a
pipe) one plain line per evaluation, never carriage-return frames."""

import io

import pytest

from grnn_jax import data
from grnn_jax.train import ModelConfig, TrainConfig, train
from grnn_jax.train.progress import PlainProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _drive(bar, n_steps=20, eval_every=5):
    """What a training loop does: a postfix at every step, an evaluation every few."""
    for step in range(1, n_steps + 1):
        bar.update(1)
        bar.set_postfix(nll=f"{1 / step:.4f}")
        if step % eval_every == 0:
            bar.evaluated(nll=f"{1 / step:.4f}", val_nll=f"{2 / step:.4f}")
    bar.write("early stop at step 20")
    bar.close()


def test_off_a_terminal_one_plain_line_per_evaluation():
    out = io.StringIO()
    bar = progress_bar(20, desc="train", file=out)
    assert isinstance(bar, PlainProgress)
    _drive(bar)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4 + 1  # four evaluations and the message
    assert [ln.split(" ", 2)[:2] for ln in lines[:4]] == [
        ["train:", "step"]] * 4
    assert [ln.split()[2] for ln in lines[:4]] == ["5/20", "10/20", "15/20", "20/20"]
    assert "val_nll=0.1000" in lines[3] and lines[4] == "early stop at step 20"


def test_on_a_terminal_a_bar():
    out = _Terminal()
    bar = progress_bar(20, desc="train", file=out)
    assert not isinstance(bar, PlainProgress)
    _drive(bar)
    assert "\r" in out.getvalue() and "early stop at step 20" in out.getvalue()


def test_disabled_shows_nothing():
    for out in (io.StringIO(), _Terminal()):
        _drive(progress_bar(20, desc="train", file=out, enabled=False))
        assert out.getvalue() == ""


def test_a_run_without_evaluations_still_says_where_it_ended():
    out = io.StringIO()
    bar = progress_bar(None, initial=3, file=out)
    bar.update(4)
    bar.set_postfix(nll="0.5")
    bar.close()
    bar.close()
    assert out.getvalue().startswith("step 7 nll=0.5 [") and out.getvalue().count("\n") == 1


@pytest.fixture(scope="module")
def splits():
    proc = data.default_switching_ar(1)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=5)
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=5)
    return tr, va


def test_training_into_a_log_writes_one_line_per_evaluation(splits, tmp_path, capfd):
    # capfd: stderr is a file here, as when a job's output is redirected to a log.
    cfg = TrainConfig(ModelConfig(n_features=1, n_components=1, hidden_size=4),
                      num_steps=6, batch_size=4, eval_every=2, log_every=1)
    train(cfg, *splits, tmp_path, progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("train: ")]
    assert [ln.split()[2] for ln in lines] == ["2/6", "4/6", "6/6"]
    assert all("val_nll=" in ln for ln in lines)


@pytest.mark.slow
def test_a_population_into_a_log_writes_one_line_per_evaluation(splits, capfd):
    from grnn_jax.train.populations.population import default_members, train_population

    cfg = TrainConfig(ModelConfig(n_features=1, n_components=1, hidden_size=4),
                      num_steps=4, batch_size=4, eval_every=2)
    train_population(cfg, *splits, members=default_members(cfg, 2), progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("train x2: ")]
    assert [ln.split()[3] for ln in lines] == ["2/4", "4/4"]
