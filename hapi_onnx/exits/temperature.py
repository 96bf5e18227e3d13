"""Temperature scaling (Guo et al., 2017): one scalar per head that calibrates its confidences.

The exit policy thresholds a head's max-softmax confidence, so that confidence should mean what
it says. A temperature ``T`` rescales the logits (``softmax(z / T)``) without changing the top-1
class; it is fitted on held-out data by minimising the negative log-likelihood and then folded
into the head's weights, so the deployed head costs nothing extra.
"""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

LOG_T_BOUNDS = (-4.0, 4.0)
"""Search range of log T: temperatures from about 0.02 to 55."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    scaled = logits / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` on these (held-out) logits.

    Args:
        logits (np.ndarray): float ``[N, K]`` head logits on held-out samples.
        labels (np.ndarray): int ``[N]`` true classes.

    Returns:
        float: T > 0 (bounded to ``exp(LOG_T_BOUNDS)``).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
