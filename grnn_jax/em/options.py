"""The settings EM's entry points share, declared once: :class:`EMOptions`.

:func:`~grnn_jax.em.fit`, :func:`~grnn_jax.em.fit_chunked`, :func:`~grnn_jax.em.fit_sharded`
and :func:`~grnn_jax.em.fit_online` take them as one ``options=EMOptions(...)`` or field by
field as keyword arguments (``em.fit(x, 2, key=key, covariance_type="diag")``); keywords
override the options' fields. Each function reads the fields it has a use for
(:data:`FIT`, :data:`CHUNKED`, :data:`SHARDED`, :data:`ONLINE`) and ignores the others in an
options object, so one object serves all four; a keyword it has no use for is a TypeError, as
for any unknown keyword.
"""

from __future__ import annotations

import dataclasses

from grnn_jax.gmm import GMM
from grnn_jax.em import checks
from grnn_jax.em.init import INIT_METHODS
from grnn_jax._util.validation import check_int

DEFAULT_INIT_SAMPLE = 100_000

# The fields each entry point reads.
FIT = ("covariance_type", "tol", "reg_covar", "max_iter", "init", "n_init", "block_size")
CHUNKED = ("covariance_type", "tol", "reg_covar", "max_iter", "init", "init_sample", "block_size")
SHARDED = CHUNKED
ONLINE = ("covariance_type", "reg_covar", "init", "init_sample", "block_size")


@dataclasses.dataclass(frozen=True)
class EMOptions:
    """Settings of an EM fit, checked when made (a one-line ValueError naming the bad one).

    Attributes:
      covariance_type: "full", "diag", "spherical" or "tied".
      tol: stop when the mean log-likelihood changes by less than this (>= 0).
      reg_covar: non-negative variance floor added to every covariance. With 0, a covariance
        that is not positive definite (a component collapsed onto a point or a subspace)
        raises a ValueError naming the component, as scikit-learn does.
      max_iter: the most EM iterations (>= 1), and the length of ``history``.
      init: "k-means++", "kmeans", "random", "random_from_data" (see
        :mod:`grnn_jax.em.init`) or a GMM to start from (for :func:`~grnn_jax.em.fit`, of
        batch shape () or (B,); ``n_init`` is then ignored).
      n_init: restarts of :func:`~grnn_jax.em.fit`; the one with the highest final
        log-likelihood is kept.
      init_sample: rows the initialisation of the chunked, sharded and online fits sees (a
        seeded uniform sample when there are more; :func:`~grnn_jax.em.fit` uses all rows).
      block_size: rows per E-step block; None picks one from D and K.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import em
      >>> x = np.concatenate([np.random.default_rng(0).normal(size=(100, 1)) + 4,
      ...                     np.random.default_rng(1).normal(size=(100, 1)) - 4])
      >>> opts = EMOptions(covariance_type="diag", max_iter=50)
      >>> a = em.fit(x, 2, key=jax.random.key(0), options=opts)
      >>> b = em.fit(x, 2, key=jax.random.key(0), covariance_type="diag", max_iter=50)
      >>> bool((a.gmm.means == b.gmm.means).all())
      True
      >>> EMOptions(tol=-1.0)
      Traceback (most recent call last):
      ...
      ValueError: tol must be >= 0; got -1.0
    """

    covariance_type: str = "full"
    tol: float = 1e-3
    reg_covar: float = 1e-6
    max_iter: int = 100
    init: str | GMM = "k-means++"
    n_init: int = 1
    init_sample: int = DEFAULT_INIT_SAMPLE
    block_size: int | None = None

    def __post_init__(self):
        checks.check_fit_args(self.covariance_type, self.tol, self.reg_covar, self.max_iter,
                              self.n_init, self.block_size)
        check_int(self.init_sample, "init_sample")
        if isinstance(self.init, str):
            if self.init not in INIT_METHODS:
                raise ValueError(f"unknown init {self.init!r}; expected a GMM or one of {INIT_METHODS}")
        elif not isinstance(self.init, GMM):
            raise ValueError(f"init must be a GMM or a method name; got {type(self.init).__name__}")

    def replace(self, **changes) -> "EMOptions":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def init_method(self) -> str | None:
        """The initialisation method's name, or None when ``init`` is a GMM."""
        return self.init if isinstance(self.init, str) else None


def resolve_options(fn: str, options: EMOptions | None, settings: dict,
                    fields: tuple[str, ...]) -> EMOptions:
    """The options of one call of ``em.<fn>``: ``options`` (None: the defaults) with the
    keyword arguments ``settings`` in place of its fields.

    Raises:
      TypeError: a keyword that is not among ``fields`` (what ``fn`` reads).
      ValueError: ``options`` is not an :class:`EMOptions`, or a setting is bad.

    Example:
      >>> resolve_options("fit", None, {"tol": 0.1}, FIT).tol
      0.1
      >>> resolve_options("fit_online", None, {"tol": 0.1}, ONLINE)
      Traceback (most recent call last):
      ...
      TypeError: fit_online() got an unexpected keyword argument 'tol'
    """
    for name in settings:
        if name not in fields:
            raise TypeError(f"{fn}() got an unexpected keyword argument {name!r}")
    if options is None:
        options = EMOptions()
    elif not isinstance(options, EMOptions):
        raise ValueError(f"options must be an em.EMOptions; got {type(options).__name__}")
    return options.replace(**settings) if settings else options
