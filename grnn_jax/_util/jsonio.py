"""One JSON encoder for every record the library writes: metrics, reports, ``--json`` output,
sweep tables. NumPy and JAX scalars and arrays (any dtype, float16 to float64 and integers)
become Python numbers and lists, so a run on float32 data writes what a float64 run writes.

Non-finite floats stay as JSON's ``NaN``/``Infinity`` tokens, as :func:`json.dumps` writes them.

Example:
  >>> import numpy as np, jax.numpy as jnp
  >>> from grnn_jax._util.jsonio import dumps
  >>> dumps({"nll": np.float32(1.5), "k": np.int64(3), "w": jnp.arange(2.0), "ok": np.bool_(True)})
  '{"nll": 1.5, "k": 3, "w": [0.0, 1.0], "ok": true}'
"""

from __future__ import annotations

import json
from pathlib import PurePath

import numpy as np


def to_jsonable(obj):
    """``obj`` with every NumPy/JAX scalar or array (nested in dicts, lists, tuples) made a
    Python value; paths become strings. Anything else is returned as it is."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (np.generic, np.ndarray)) or hasattr(obj, "__array__") and hasattr(obj, "dtype"):
        return np.asarray(obj).tolist()
    return obj


def dumps(obj, **kwargs) -> str:
    """:func:`json.dumps` of :func:`to_jsonable` ``(obj)``; keyword arguments pass through."""
    return json.dumps(to_jsonable(obj), **kwargs)
