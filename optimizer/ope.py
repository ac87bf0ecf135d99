"""Off-policy estimates of a candidate policy's quality from logged, propensity-scored traffic.

Every logged request carries the probability the logging policy had of taking the route it
took (``aperture.route.propensity``): ``(1 − ε)`` for the policy's own choice plus ``ε / n``
for each route of the exploration set. With those, the mean reward the *candidate* policy
would have earned is estimated without deploying it:

- inverse propensity scoring, ``IPS = mean(1[a = π(x)] · r / p)``: unbiased, high variance;
- doubly robust, ``DR = mean(q̂(x, π(x)) + 1[a = π(x)] · (r − q̂(x, a)) / p)``: unbiased when
  either the propensities or the quality model are right, with much lower variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OffPolicyEstimate:
    ips: float
    dr: float
    ips_se: float
    dr_se: float
    n: int
    matched: int


def estimate(
    taken: np.ndarray,
    reward: np.ndarray,
    propensity: np.ndarray,
    chosen: np.ndarray,
    q_hat_chosen: np.ndarray,
    q_hat_taken: np.ndarray,
    *,
    clip: float = 50.0,
) -> OffPolicyEstimate:
    """``taken``/``chosen`` are route indices (logged action, candidate's action) per request."""
    n = len(taken)
    if n == 0:
        raise ValueError("no logged requests to estimate from")
    p = np.clip(np.asarray(propensity, dtype=float), 1.0 / clip, 1.0)
    match = (np.asarray(taken) == np.asarray(chosen)).astype(float)
    ips_terms = match * reward / p
    dr_terms = q_hat_chosen + match * (reward - q_hat_taken) / p
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    return OffPolicyEstimate(float(ips_terms.mean()), float(dr_terms.mean()), se(ips_terms), se(dr_terms), n, int(match.sum()))
