"""Exit heads: multinomial logistic regression on pooled features, fitted with scipy L-BFGS.

The backbone is frozen, so a head is a convex problem on fixed features: standardise, minimise
mean cross-entropy + (l2 / 2) * ||W||^2 with an analytic gradient, then fold the standardisation
and the temperature into one affine map ``logits = x @ W + b`` on the raw pooled features.

Choosing the L2 strength: a seeded held-out part of the training data (``HELDOUT_FRACTION``) is
kept aside; the head is fitted on the rest for each value of ``L2_GRID`` (strongest first, each
fit warm-started from the previous one), a temperature is fitted on the held-out part for each,
and the pair with the lowest held-out NLL wins (with the temperature's one-pseudo-sample prior,
see :mod:`~hapi_onnx.exits.temperature`). NLL, not accuracy, because it is a smooth proper score
that also rewards the honest confidences the exit thresholds rely on; with standardised
features the useful range is narrow, so three decades cover it.

Fewer training samples than features (a wide feature map, a few hundred images, many classes):
the penalised optimum's weights lie in the span of the fitting samples' features (any component
outside it changes no logit and only adds to the penalty), so the fit runs on the coordinates of
that span, ``r <= N`` of them instead of F, and maps the weights back: the same optimum, each
L-BFGS step ``F / r`` times cheaper.
"""

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.blas import blas_threads
from hapi_onnx.exits.temperature import fit_temperature, nll

L2_GRID = (1e-2, 1e-3, 1e-4)
HELDOUT_FRACTION = 0.15
SPLIT_SEED = 0
MAX_ITER = 400


@dataclass(frozen=True)
class LinearHead:
    """An affine classifier on raw pooled features; standardisation and temperature folded in.

    Attributes:
        weight (np.ndarray): float32 ``[F, K]``.
        bias (np.ndarray): float32 ``[K]``.
    """

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``features @ weight + bias`` for float ``[N, F]`` features."""
        return features.astype(np.float32) @ self.weight + self.bias


@dataclass(frozen=True)
class HeadFit:
    """A fitted head and how it did.

    Attributes:
        head (LinearHead): The head to graft.
        train_accuracy (float): Accuracy on the part of the training data it was fitted on.
        heldout_accuracy (float): Accuracy on the held-out part.
        heldout_nll (float): NLL on the held-out part, temperature applied.
        temperature (float): The fitted softmax temperature (folded into ``head``).
        l2 (float): The chosen L2 strength.
        seconds (float): Wall time of the fit, grid and temperature included.
    """

    head: LinearHead
    train_accuracy: float
    heldout_accuracy: float
    heldout_nll: float
    temperature: float
    l2: float
    seconds: float


def heldout_split(
    n: int, fraction: float = HELDOUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (fit, held-out) index arrays, each sorted.

    Raises:
        HapiError: when ``n`` is too small to keep at least one sample on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise HapiError(f"heldout fraction must be in (0, 1). Got {fraction!r} instead.")
    held = int(round(n * fraction))
    if held < 1 or n - held < 1:
        raise HapiError(f"Need more training samples to fit exit heads (a held-out part is kept). Got {n}.")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _loss_and_grad(
    params: np.ndarray, z: np.ndarray, onehot: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy + (l2 / 2) ||W||^2 and its gradient, for ``params = [W.ravel(), b]``."""
    n, f = z.shape
    k = onehot.shape[1]
    w, b = params[: f * k].reshape(f, k), params[f * k :]
    logits = z @ w + b
    top = logits.max(axis=1, keepdims=True)
    shifted = np.exp(logits - top)
    total = shifted.sum(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(total[:, 0])
    loss = np.mean(lse - np.sum(logits * onehot, axis=1)) + 0.5 * l2 * np.sum(w * w)
    delta = (shifted / total - onehot) / n
    grad_w = z.T @ delta + l2 * w
    return float(loss), np.concatenate([grad_w.ravel(), delta.sum(axis=0)])


def fit_logistic(
    z: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, init: np.ndarray | None = None
) -> np.ndarray:
    """Minimise L2-regularised multinomial cross-entropy on (standardised) features with L-BFGS.

    Args:
        z (np.ndarray): float64 ``[N, F]`` features.
        labels (np.ndarray): int ``[N]`` classes in ``[0, num_classes)``.
        num_classes (int): K.
        l2 (float): L2 strength on the weights (the bias is not penalised).
        init (np.ndarray | None): Starting ``[W.ravel(), b]``; zeros when None. Defaults to None.

    Returns:
        np.ndarray: The optimum as ``[W.ravel(), b]`` (``W`` is ``[F, K]``).
    """
    onehot = np.eye(num_classes)[labels]
    x0 = np.zeros(z.shape[1] * num_classes + num_classes) if init is None else init
    result = minimize(
        _loss_and_grad, x0, args=(z, onehot, l2), jac=True, method="L-BFGS-B",
        options={"maxiter": MAX_ITER, "gtol": 1e-6},
    )
    return result.x


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = SPLIT_SEED,
) -> HeadFit:
    """Fit one exit head on pooled features: L2 chosen and temperature fitted on a held-out part.

    Deterministic: the split is seeded and L-BFGS starts from zeros. Runs on one BLAS thread
    (:func:`~hapi_onnx.exits.blas.blas_threads`): these problems are too small to gain from more.

    Args:
        features (np.ndarray): float ``[N, F]`` pooled features of the training data.
        labels (np.ndarray): int ``[N]`` classes.
        num_classes (int): K.
        l2_grid (tuple[float, ...]): L2 strengths to try. Defaults to ``L2_GRID``.
        heldout_fraction (float): Share of samples held out. Defaults to ``HELDOUT_FRACTION``.
        seed (int): Seed of the held-out split. Defaults to ``SPLIT_SEED``.

    Returns:
        HeadFit: The folded head and its report.
    """
    with blas_threads(1):
        return _fit_head(features, labels, num_classes, l2_grid, heldout_fraction, seed)


def _fit_head(features, labels, num_classes, l2_grid, heldout_fraction, seed) -> HeadFit:
    start = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    fit_idx, held_idx = heldout_split(len(features), heldout_fraction, seed)
    x = np.asarray(features, dtype=np.float64)
    mu = x[fit_idx].mean(axis=0)
    sigma = x[fit_idx].std(axis=0)
    sigma = np.where(sigma > 1e-6 * max(1.0, float(np.abs(mu).max(initial=0.0))), sigma, 1.0)
    z = (x - mu) / sigma
    z_fit, z_held = z[fit_idx], z[held_idx]
    y_fit, y_held = labels[fit_idx], labels[held_idx]
    basis = _sample_span(z_fit)  # [F, r]: fit on the span's coordinates (r < F), or None
    if basis is not None:
        z_fit, z_held = z_fit @ basis, z_held @ basis
    f, k = z_fit.shape[1], num_classes

    best = None
    params = None
    for l2 in sorted(l2_grid, reverse=True):
        params = fit_logistic(z_fit, y_fit, k, l2, init=params)
        held_logits = z_held @ params[: f * k].reshape(f, k) + params[f * k :]
        temperature = fit_temperature(held_logits, y_held)
        score = nll(held_logits, y_held, temperature, prior=1.0)
        if best is None or score < best[0]:
            best = (score, l2, temperature, params.copy(), nll(held_logits, y_held, temperature))
    _, l2, temperature, params, held_nll = best
    w, b = params[: f * k].reshape(f, k), params[f * k :]
    if basis is not None:
        w = basis @ w
    # logits / T = ((x - mu) / sigma) @ W / T + b / T = x @ W' + b'
    w_folded = w / sigma[:, None] / temperature
    b_folded = (b - (mu / sigma) @ w) / temperature
    head = LinearHead(weight=w_folded.astype(np.float32), bias=b_folded.astype(np.float32))
    logits = x @ w_folded + b_folded
    pred = logits.argmax(axis=1)
    return HeadFit(
        head=head,
        train_accuracy=float(np.mean(pred[fit_idx] == y_fit)),
        heldout_accuracy=float(np.mean(pred[held_idx] == y_held)),
        heldout_nll=float(held_nll),
        temperature=float(temperature),
        l2=float(l2),
        seconds=time.perf_counter() - start,
    )


def _sample_span(z: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis ``[F, r]`` of the span of the rows of ``z``, or None when ``r`` would not
    be smaller than F (then the fit runs on the features themselves)."""
    n, f = z.shape
    if n >= f:
        return None
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    rank = int(np.sum(s > s.max(initial=0.0) * max(n, f) * np.finfo(z.dtype).eps))
    return np.ascontiguousarray(vt[:rank].T) if rank < f else None


def head_probabilities(head: LinearHead, features: np.ndarray) -> np.ndarray:
    """Softmax probabilities of ``head`` on raw pooled features (what the grafted head outputs)."""
    return softmax(head.logits(features).astype(np.float64), axis=1)
