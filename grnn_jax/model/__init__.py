"""The Gaussian-mixture recurrent network: model, sequence log-likelihood, sampling.

One module per idea (cells, the scan, the per-step, EM-updated and filtering heads,
sampling); this face re-exports their public names.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from grnn_jax import model
  >>> net = model.GRNN(n_features=2, n_components=3, hidden_size=8, cell="gru")
  >>> x = jnp.zeros((4, 6, 2))
  >>> params = net.init(jax.random.key(0), x)
  >>> model.sequence_log_prob(net, params, x, lengths=jnp.array([6, 5, 4, 1])).shape
  (4,)
  >>> model.generate(jax.random.key(1), net, params, 5, n_samples=2).shape
  (2, 5, 2)
"""

from grnn_jax.data.masks import mask_from_lengths
from grnn_jax.model.em_head import EM_COLLECTION, EMMixtureHead
from grnn_jax.model.cells import CELLS, GRUCell, LayerNormLSTMCell, LSTMCell, check_cell
from grnn_jax.model.em_grnn import EMGRNN, em_coefficients, em_collection, em_components
from grnn_jax.model.generate import forecast, generate
from grnn_jax.model.grnn import (
    GRNN,
    check_inputs,
    hidden_states,
    sequence_log_prob,
    shift_right,
    step_log_probs,
)
from grnn_jax.model.regime_filter import FilterGRNN, FilterState, RegimeFilterHead

__all__ = [
    "CELLS",
    "EMGRNN",
    "EMMixtureHead",
    "EM_COLLECTION",
    "FilterGRNN",
    "FilterState",
    "RegimeFilterHead",
    "GRNN",
    "GRUCell",
    "LSTMCell",
    "LayerNormLSTMCell",
    "check_cell",
    "check_inputs",
    "em_coefficients",
    "em_collection",
    "em_components",
    "forecast",
    "generate",
    "hidden_states",
    "mask_from_lengths",
    "sequence_log_prob",
    "shift_right",
    "step_log_probs",
]
