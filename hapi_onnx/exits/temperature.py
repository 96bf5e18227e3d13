"""Temperature scaling (Guo et al., 2017): one scalar per head that calibrates its confidences.

The exit policy thresholds a head's max-softmax confidence, so that confidence should mean what
it says. A temperature ``T`` rescales the logits (``softmax(z / T)``) without changing the top-1
class; it is fitted on held-out data by minimising the negative log-likelihood and then folded
into the head's weights, so the deployed head costs nothing extra.

One uniform pseudo-sample is added to the held-out targets (a weak Dirichlet prior on the error
rate). Without it, a head that makes no mistake on the held-out part (common for deep heads: the
held-out part is still data the backbone was trained on) drives ``T`` towards 0 and its
confidences to exactly 1.0 in float32, which destroys their ranking, the one thing the exit
thresholds need. With it, a perfect held-out score still claims an error rate of about 1/N,
not 0.
"""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

LOG_T_BOUNDS = (-4.0, 4.0)
"""Search range of log T: temperatures from about 0.02 to 55."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, prior: float = 0.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against the labels.

    Args:
        logits (np.ndarray): float ``[N, K]``.
        labels (np.ndarray): int ``[N]``.
        temperature (float): T. Defaults to 1.0.
        prior (float): Uniform pseudo-samples mixed into the targets: the target of each row is
            ``(N * onehot + prior / K) / (N + prior)``. Defaults to 0.0 (plain NLL).
    """
    scaled = logits / temperature
    n = len(labels)
    smooth = prior / (n + prior)
    picked = scaled[np.arange(n), labels]
    target = (1.0 - smooth) * picked + smooth * scaled.mean(axis=1)
    return float(np.mean(logsumexp(scaled, axis=1) - target))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, prior: float = 1.0) -> float:
    """The temperature that minimises the (prior-smoothed) NLL on these held-out logits.

    Args:
        logits (np.ndarray): float ``[N, K]`` head logits on held-out samples.
        labels (np.ndarray): int ``[N]`` true classes.
        prior (float): Uniform pseudo-samples (see :func:`nll`). Defaults to 1.0.

    Returns:
        float: T > 0 (bounded to ``exp(LOG_T_BOUNDS)``).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t)), prior),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
