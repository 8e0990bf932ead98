"""The recurrent model, split by idea: cells, the GRNN module, sampling.

The public names live in :mod:`grnn_jax.model`.
"""
