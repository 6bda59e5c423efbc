"""VeSSAL: streaming volume sampling at a labeling rate, in one pass over the pool.

Saran, Yousefi, Krishnamurthy, Langford and Ash, "Streaming active learning with deep neural
networks", ICML 2023.

The procedure, for the stream points ``i = 0, 1, …`` in order, each a ``r × d`` block ``U_i``
(``r`` rows of dimension ``d``; ``r = 1`` is a single vector ``u_i``):

1. ``M_i = U_i A⁻¹ U_iᵀ`` (``r × r``) and the score ``s_i = |det M_i|`` (``= u_iᵀA⁻¹u_i`` at
   rank 1), with ``A`` the current ``λI + Σ_{kept j} U_jᵀU_j`` (``+ Σ_labeled`` when a labeled
   set is given).
2. The running covariance takes point ``i`` *before* the keep decision (the reference package's
   order): ``Σ̂_i = (S_L + Σ_{j ≤ i} U_jᵀU_j) / (n_L + i + 1)``, ``S_L``/``n_L`` the labeled
   sum and count (0 without a labeled set). With a fixed covariance (``covariance=`` /
   ``precompute_covariance``) ``Σ̂`` never changes.
3. The target rate ``ρ_i = (k − kept_i) / (N − i)`` (budget form) or the user's ``rate``.
4. Keep with probability ``p_i = min(1, ρ_i · s_i / tr(Σ̂_i A⁻¹))`` (``p_i = 0`` when ``s_i = 0``):
   keep iff ``v_i < p_i`` for the uniform draw ``v_i``: the stream is cut into internal chunks of
   ``CHUNK`` points at fixed positions and chunk ``s`` draws ``uniform(fold_in(stream_key,
   s·CHUNK), (CHUNK,))``, so each draw depends on the global stream position only, never on how
   the caller batches the stream.
5. On a keep, ``A⁻¹ ← A⁻¹ − W K Wᵀ`` with ``W = A⁻¹U_iᵀ`` and ``K = (I + M_i)⁻¹`` (Woodbury).

Two kernels run it, on the same draws, with the same picks up to float rounding:
:mod:`~aljax._vessal._dense` holds ``A⁻¹`` as a ``d × d`` matrix; :mod:`~aljax._vessal._span`
(fixed covariance, few kept rows relative to ``d``) works in the span of the kept rows and never
forms it.

Modules: ``_rows`` (stream rows, chunks, the covariance pass), ``_rule`` (the keep rule),
``_dense`` and ``_span`` (the kernels), ``_stream`` (driving a stream through them, the fill of a
budget's shortfall), ``_api`` (:func:`volume_stream`, :func:`vessal` and their checks).
"""

from ._api import vessal as vessal
from ._api import volume_stream as volume_stream
from ._rows import covariance_of as covariance_of

__all__ = ["covariance_of", "vessal", "volume_stream"]
