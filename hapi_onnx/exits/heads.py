"""Exit heads: multinomial logistic regression on pooled features, fitted with scipy L-BFGS.

The backbone is frozen, so a head is a convex problem on fixed features: standardise, minimise
mean cross-entropy + (l2 / 2) * ||W||^2 with an analytic gradient, then fold the standardisation
(and whitening) and the temperature into one affine map ``logits = x @ W + b`` on the raw pooled
features. A seeded held-out part of the training data (``HELDOUT_FRACTION``) chooses the
regularisation and fits the temperature (with its one-pseudo-sample prior, see
:mod:`~hapi_onnx.exits.temperature`), by held-out NLL: a smooth proper score that also rewards
the honest confidences the exit thresholds rely on. Two solvers, by problem size (``solver="auto"``):

* ``exact`` (up to ``EXACT_MAX_PARAMS`` weights, F x K: every 10-class head, 100 classes on
  up to 655 features): float64 L-BFGS to convergence for each value of ``L2_GRID`` (strongest
  first, each warm-started from the previous one). Hundreds of gradient evaluations; cheap here.
* ``whitened`` (larger: 1000 classes on 2048 features is 2M weights, and one gradient over 16k
  samples is 130 GFLOP, a second or two): the standardised features are whitened with a shrunk
  covariance (PCA from up to ``WHITEN_SAMPLES`` samples, eigenvalues floored at ``WHITEN_FLOOR``
  of their mean, so no direction is amplified more than about 3x and rare large values cannot
  blow up the logits), which makes the problem well conditioned enough for float32 L-BFGS (with
  ``FAST_MEMORY`` correction pairs) to get close to its optimum in about ten iterations; the L2
  grid is replaced by early stopping: the iterates at ``FAST_CHECKPOINTS`` are scored by
  held-out NLL (temperature fitted), the fit stops at the first that scores worse than the one
  before, and the best is kept, with ``FAST_L2``. At most about 16 gradient evaluations, plus one
  ``F x F`` eigendecomposition. Features wider than
  ``WHITEN_MAX_FEATURES`` are only standardised (the eigendecomposition would dominate).

``exact`` with fewer training samples than features (a wide feature map, a few hundred images):
the penalised optimum's weights lie in the span of the fitting samples' features (any component
outside it changes no logit and only adds to the penalty), so the fit runs on the coordinates of
that span, ``r <= N`` of them instead of F, and maps the weights back: the same optimum, each
L-BFGS step ``F / r`` times cheaper.

``bench/bench_heads.py`` measures both on the same problems (accuracy, NLL, time).
"""

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.blas import blas_threads, usable_cpus
from hapi_onnx.exits.temperature import fit_temperature, nll

L2_GRID = (1e-2, 1e-3, 1e-4)
HELDOUT_FRACTION = 0.15
SPLIT_SEED = 0
MAX_ITER = 400
SOLVERS = ("auto", "exact", "whitened")
EXACT_MAX_PARAMS = 65536
FAST_L2 = 1e-2
FAST_CHECKPOINTS = (4, 8, 12)
WHITEN_MAX_FEATURES = 4096
WHITEN_SAMPLES = 8192
TRAIN_ACCURACY_SAMPLES = 4096
WHITEN_FLOOR = 0.1
FAST_MEMORY = 5
PARALLEL_MIN_WORK = 10**10
_CHUNK = 4096  # rows per step when standardising/whitening large feature arrays


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
        train_accuracy (float): Accuracy on the part of the training data it was fitted on
            (``whitened``: on up to ``TRAIN_ACCURACY_SAMPLES`` of them).
        heldout_accuracy (float): Accuracy on the held-out part.
        heldout_nll (float): NLL on the held-out part, temperature applied.
        temperature (float): The fitted softmax temperature (folded into ``head``).
        l2 (float): The chosen L2 strength.
        seconds (float): Wall time of the fit, grid and temperature included.
        solver (str): ``exact`` or ``whitened`` (see the module docstring).
        iterations (int): L-BFGS iterations of the kept solution (summed over the L2 grid for
            ``exact``).
    """

    head: LinearHead
    train_accuracy: float
    heldout_accuracy: float
    heldout_nll: float
    temperature: float
    l2: float
    seconds: float
    solver: str = "exact"
    iterations: int = 0


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
) -> tuple[np.ndarray, int]:
    """Minimise L2-regularised multinomial cross-entropy on (standardised) features with L-BFGS.

    Args:
        z (np.ndarray): float64 ``[N, F]`` features.
        labels (np.ndarray): int ``[N]`` classes in ``[0, num_classes)``.
        num_classes (int): K.
        l2 (float): L2 strength on the weights (the bias is not penalised).
        init (np.ndarray | None): Starting ``[W.ravel(), b]``; zeros when None. Defaults to None.

    Returns:
        tuple[np.ndarray, int]: The optimum as ``[W.ravel(), b]`` (``W`` is ``[F, K]``) and the
        iterations it took.
    """
    onehot = np.eye(num_classes)[labels]
    x0 = np.zeros(z.shape[1] * num_classes + num_classes) if init is None else init
    result = minimize(
        _loss_and_grad, x0, args=(z, onehot, l2), jac=True, method="L-BFGS-B",
        options={"maxiter": MAX_ITER, "gtol": 1e-6},
    )
    return result.x, int(result.nit)


def choose_solver(num_features: int, num_classes: int, solver: str = "auto") -> str:
    """``exact`` or ``whitened`` for a head of ``num_features`` x ``num_classes`` weights.

    Raises:
        HapiError: for an unknown solver.
    """
    if solver not in SOLVERS:
        raise HapiError(f"solver must be one of {', '.join(SOLVERS)}. Got {solver!r} instead.")
    if solver != "auto":
        return solver
    return "exact" if num_features * num_classes <= EXACT_MAX_PARAMS else "whitened"


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = SPLIT_SEED,
    solver: str = "auto",
) -> HeadFit:
    """Fit one exit head on pooled features: regularisation chosen and temperature fitted on a held-out part.

    Deterministic for a given BLAS thread count: the split is seeded and L-BFGS starts from zeros.
    ``exact`` runs on one BLAS thread (:func:`~hapi_onnx.exits.blas.blas_threads`: its thousands
    of small products only contend with more); ``whitened`` too, unless one of its products is at
    least ``PARALLEL_MIN_WORK`` multiply-adds (16,000 x 2048 x 1000 is 3e10), which then run on
    every usable CPU: x1.55 on this idle 2-core machine, no gain (but no loss) when other
    processes hold the cores, where smaller heads lost 2-4x (see ``bench/bench_heads.py``).

    Args:
        features (np.ndarray): float ``[N, F]`` pooled features of the training data.
        labels (np.ndarray): int ``[N]`` classes.
        num_classes (int): K.
        l2_grid (tuple[float, ...]): L2 strengths to try (``exact``). Defaults to ``L2_GRID``.
        heldout_fraction (float): Share of samples held out. Defaults to ``HELDOUT_FRACTION``.
        seed (int): Seed of the held-out split. Defaults to ``SPLIT_SEED``.
        solver (str): ``auto``, ``exact`` or ``whitened`` (see the module docstring). Defaults
            to "auto".

    Returns:
        HeadFit: The folded head and its report.
    """
    solver = choose_solver(np.shape(features)[1], num_classes, solver)
    if solver == "exact":
        with blas_threads(1):
            return _fit_head(features, labels, num_classes, l2_grid, heldout_fraction, seed)
    work = np.shape(features)[0] * np.shape(features)[1] * num_classes  # multiply-adds of one product
    with blas_threads(usable_cpus() if work >= PARALLEL_MIN_WORK else 1):
        return _fit_whitened(features, labels, num_classes, heldout_fraction, seed)


def _fit_head(features, labels, num_classes, l2_grid, heldout_fraction, seed) -> HeadFit:
    start = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    fit_idx, held_idx = heldout_split(len(features), heldout_fraction, seed)
    x = np.asarray(features, dtype=np.float64)
    fit_rows = x[fit_idx]
    mu = fit_rows.mean(axis=0)
    sigma = _safe_std(fit_rows.std(axis=0), mu)
    del fit_rows
    z = (x - mu) / sigma
    z_fit, z_held = z[fit_idx], z[held_idx]
    y_fit, y_held = labels[fit_idx], labels[held_idx]
    basis = _sample_span(z_fit)  # [F, r]: fit on the span's coordinates (r < F), or None
    if basis is not None:
        z_fit, z_held = z_fit @ basis, z_held @ basis
    f, k = z_fit.shape[1], num_classes

    best = None
    params = None
    iterations = 0
    for l2 in sorted(l2_grid, reverse=True):
        params, used = fit_logistic(z_fit, y_fit, k, l2, init=params)
        iterations += used
        held_logits = z_held @ params[: f * k].reshape(f, k) + params[f * k :]
        temperature = fit_temperature(held_logits, y_held)
        score = nll(held_logits, y_held, temperature, prior=1.0)
        if best is None or score < best[0]:
            best = (score, l2, temperature, params.copy(), nll(held_logits, y_held, temperature), iterations)
    _, l2, temperature, params, held_nll, iterations = best
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
        solver="exact",
        iterations=int(iterations),
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
def _safe_std(sigma: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Standard deviations with (near-)constant features mapped to 1, so they standardise to 0."""
    return np.where(sigma > 1e-6 * max(1.0, float(np.abs(mu).max(initial=0.0))), sigma, 1.0)


def _loss_and_grad32(params: np.ndarray, z: np.ndarray, labels: np.ndarray, l2: float, k: int):
    """float32 :func:`_loss_and_grad` without a one-hot matrix (K may be 1000)."""
    n, f = z.shape
    w = params[: f * k].astype(np.float32).reshape(f, k)
    logits = z @ w
    logits += params[f * k :].astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    picked = logits[rows, labels] / total[:, 0]
    loss = -np.mean(np.log(np.maximum(picked, 1e-30)), dtype=np.float64)
    loss += 0.5 * l2 * float(np.dot(w.ravel(), w.ravel()))
    logits /= total
    logits[rows, labels] -= 1.0
    logits /= n
    grad_w = z.T @ logits
    grad_w += l2 * w
    return float(loss), np.concatenate([grad_w.ravel(), logits.sum(axis=0)]).astype(np.float64)


def _fit_whitened(features, labels, num_classes, heldout_fraction, seed) -> HeadFit:
    start = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    fit_idx, held_idx = heldout_split(len(features), heldout_fraction, seed)
    x = np.asarray(features, dtype=np.float32)
    f, k, n_fit = x.shape[1], num_classes, len(fit_idx)
    fit_rows = x[fit_idx]
    mu = fit_rows.mean(axis=0, dtype=np.float64)
    sigma = _safe_std(fit_rows.std(axis=0, dtype=np.float64), mu)
    del fit_rows
    # Rows in (fit, held-out) order, standardised in float32, chunk by chunk: one copy of the features.
    order = np.concatenate([fit_idx, held_idx])
    z = np.empty((len(order), f), dtype=np.float32)
    mu32, sigma32 = mu.astype(np.float32), sigma.astype(np.float32)
    for a in range(0, len(order), _CHUNK):
        z[a : a + _CHUNK] = (x[order[a : a + _CHUNK]] - mu32) / sigma32
    rng = np.random.default_rng(seed)
    whiten = None
    if f <= WHITEN_MAX_FEATURES:
        part = z[_sample(n_fit, WHITEN_SAMPLES, rng)]
        eigenvalues, vectors = np.linalg.eigh(part.T @ part / np.float32(len(part)))  # float32 LAPACK
        del part
        eigenvalues = np.maximum(eigenvalues, WHITEN_FLOOR * max(float(eigenvalues.mean()), 1e-12))
        whiten = (vectors / np.sqrt(eigenvalues)).astype(np.float32)
        for a in range(0, len(z), _CHUNK):
            z[a : a + _CHUNK] = z[a : a + _CHUNK] @ whiten
    z_fit, z_held = z[:n_fit], z[n_fit:]
    y_fit, y_held = labels[fit_idx], labels[held_idx]

    def score(params: np.ndarray, iterations: int) -> tuple:
        w, b = params[: f * k].astype(np.float32).reshape(f, k), params[f * k :].astype(np.float32)
        held_logits = (z_held @ w + b).astype(np.float64)
        temperature = fit_temperature(held_logits, y_held)
        return (nll(held_logits, y_held, temperature, prior=1.0), iterations, temperature, w, b,
                nll(held_logits, y_held, temperature), float(np.mean(held_logits.argmax(axis=1) == y_held)))

    best = [None]
    count = [0]

    def checkpoint(xk: np.ndarray) -> None:
        """Score the iterate at each checkpoint; stop once the held-out score gets worse (early stopping)."""
        count[0] += 1
        if count[0] in FAST_CHECKPOINTS:
            scored = score(xk, count[0])
            if best[0] is not None and scored[0] >= best[0][0]:
                raise StopIteration
            best[0] = scored

    result = minimize(
        _loss_and_grad32, np.zeros(f * k + k), args=(z_fit, y_fit, FAST_L2, k), jac=True, method="L-BFGS-B",
        callback=checkpoint, options={"maxiter": max(FAST_CHECKPOINTS), "gtol": 1e-6, "maxcor": FAST_MEMORY},
    )
    if best[0] is None or (result.nit not in FAST_CHECKPOINTS and result.nit < max(FAST_CHECKPOINTS)):
        last = score(result.x, int(result.nit))  # converged between checkpoints
        if best[0] is None or last[0] < best[0][0]:
            best[0] = last
    _, iterations, temperature, w, b, held_nll, held_acc = best[0]
    rows = _sample(n_fit, TRAIN_ACCURACY_SAMPLES, rng)
    train_acc = float(np.mean((z_fit[rows] @ w + b).argmax(axis=1) == y_fit[rows]))
    # logits / T = ((x - mu) / sigma) @ M @ W / T + b / T = x @ W' + b', with M the whitening (or I)
    w64 = w.astype(np.float64) if whiten is None else whiten.astype(np.float64) @ w.astype(np.float64)
    w_folded = w64 / sigma[:, None] / temperature
    b_folded = (b.astype(np.float64) - (mu / sigma) @ w64) / temperature
    return HeadFit(
        head=LinearHead(weight=w_folded.astype(np.float32), bias=b_folded.astype(np.float32)),
        train_accuracy=train_acc,
        heldout_accuracy=held_acc,
        heldout_nll=float(held_nll),
        temperature=float(temperature),
        l2=FAST_L2,
        seconds=time.perf_counter() - start,
        solver="whitened",
        iterations=int(iterations),
    )


def _sample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``range(n)``, or ``limit`` of its indices drawn without replacement (sorted) when n is larger."""
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))


def head_probabilities(head: LinearHead, features: np.ndarray) -> np.ndarray:
    """Softmax probabilities of ``head`` on raw pooled features (what the grafted head outputs)."""
    return softmax(head.logits(features).astype(np.float64), axis=1)
