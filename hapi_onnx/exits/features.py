"""Pooled features at the cut tensors, collected in one ONNX Runtime pass over a data source.

The backbone is extended with pooling nodes at each cut (see :mod:`hapi_onnx.exits.pooling`) and
pruned to what those need, so ORT returns only ``[batch, dim]`` vectors. The data is read batch
by batch (:class:`~hapi_onnx.data.DataSource`), and the pooled vectors are the only per-sample
state kept (:class:`FeatureSet`): float32 in memory while they are small, float16 files on disk
beyond ``SPILL_BYTES``, so memory grows with N x (sum of pooled dims) at most, never with the
images or the feature maps.
"""

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from hapi_onnx.data import Dataset, DataSource, check_batch_size, check_compatible
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.pooling import pooled_features
from hapi_onnx.graph import prune_to
from hapi_onnx.graph.quant import float_view
from hapi_onnx.runtime.session import create_session

SPILL_BYTES = 256 << 20
"""Pooled features beyond this many bytes (as float32) go to float16 files on disk."""
INPUT_BATCH_BYTES = 32 << 20
"""An automatic batch holds at most this many bytes of float32 input (and at most 256 samples)."""

Progress = Callable[[int, int], None]
"""Called as ``progress(0, total)`` when the work starts, then ``progress(done, total)`` after every batch."""


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The model's single non-initializer input.

    Raises:
        HapiError: when the model has no input or more than one.
    """
    inits = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise HapiError(
            f"Expected a model with exactly one input (the image batch). Got {len(inputs)}: "
            f"{[i.name for i in inputs]}."
        )
    return inputs[0]


def input_shape(model: onnx.ModelProto) -> list[int | str | None]:
    """Static dims as ints, symbolic ones as their name (or None), of the model's image input."""
    dims = image_input(model).type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def model_batches(model: onnx.ModelProto, data: DataSource, batch: int) -> Iterator[tuple[np.ndarray, int]]:
    """``data`` in runs of ``batch`` samples as contiguous float32, with how many rows of each are real.

    Where the model's graph fixes its batch axis, the last run is padded with zeros to ``batch``
    (the caller drops the padded rows of the outputs).
    """
    fixed = isinstance(input_shape(model)[0], int)
    for chunk in data.batches(batch):
        rows = len(chunk)
        if rows < batch and fixed:
            chunk = np.concatenate([chunk, np.zeros((batch - rows,) + chunk.shape[1:], np.float32)])
        yield np.ascontiguousarray(chunk, dtype=np.float32), rows


def check_labelled(
    model: onnx.ModelProto, data: DataSource, num_classes: int, role: str, labels_required: bool = True
) -> DataSource:
    """Check data against the model (input dtype and shape, labels, class count) and fit it to the input.

    Args:
        model (onnx.ModelProto): The model the data will be fed to.
        data (DataSource): The data (an in-memory :class:`~hapi_onnx.data.Dataset`, an array file,
            an image folder).
        num_classes (int): The model's class count.
        role (str): What the data is for, used in messages (e.g. "training data").
        labels_required (bool): Refuse data without labels. Defaults to True.

    Returns:
        DataSource: The data as the model's input (an image folder with its spec resolved).

    Raises:
        HapiError: when the data cannot be used with this model.
    """
    if not isinstance(data, DataSource):
        raise HapiError(f"{role} must be a hapi_onnx.data.DataSource (e.g. a Dataset). Got {type(data).__name__} "
                        "instead.")
    if data.y is None and labels_required:
        raise HapiError(f"{role} ({data.name}) has no labels; save it with np.savez(path, x=images, y=labels), or "
                        "put the images in one subfolder per class.")
    elem = image_input(model).type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise HapiError(
            f"The model's input must be float32 to be fed images. Got "
            f"{onnx.TensorProto.DataType.Name(elem).lower()} instead; re-export it with a float32 input."
        )
    data = data.fit_to(input_shape(model))
    check_compatible(data, input_shape(model), num_classes)
    if data.classes is not None and len(data.classes) != num_classes:
        single = " (unlabelled images go in the folder itself, with no subfolder)" if len(data.classes) == 1 else ""
        raise HapiError(
            f"{role} names {len(data.classes)} classes but the model has {num_classes}{single}. "
            "Check that the data belongs to this model."
        )
    return data


def run_batch_size(model: onnx.ModelProto, requested: int | None, sample_shape: Sequence[int] | None = None) -> int:
    """Samples per ORT run: the model's fixed batch size if it has one, else ``requested``.

    With ``requested`` None, as many samples as fit in ``INPUT_BATCH_BYTES`` of float32 input
    (at most 256): 256 MNIST digits, 32 images of 3 x 224 x 224.
    """
    if requested is not None:
        check_batch_size(requested)
    shape = input_shape(model)
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    if requested is not None:
        return requested
    dims = sample_shape if sample_shape is not None else shape[1:]
    per_sample = 4 * int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in dims]))
    auto = min(256, max(1, INPUT_BATCH_BYTES // per_sample))
    return 1 << (auto.bit_length() - 1)  # a power of two


def feature_model(
    model: onnx.ModelProto, cuts: Sequence[tuple[str, Sequence]], pooling: str = "gap"
) -> tuple[onnx.ModelProto, list[int]]:
    """The backbone up to the cuts, whose outputs are the pooled features at each cut.

    An int8/uint8 cut (QDQ, QOperator) is pooled after the ``DequantizeLinear`` its model reads
    it with (:func:`~hapi_onnx.graph.quant.float_view`), as its head will be.

    Args:
        model (onnx.ModelProto): The backbone (not modified).
        cuts (Sequence[tuple[str, Sequence]]): ``(tensor, shape)`` of each cut.
        pooling (str): See :func:`~hapi_onnx.exits.pooling.pooled_features`. Defaults to "gap".

    Returns:
        tuple[onnx.ModelProto, list[int]]: The feature model (output k = features of cut k) and
        the feature dimension of each cut.
    """
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    outputs, dims = [], []
    for k, (tensor, shape) in enumerate(cuts):
        prefix = f"hapi_features{k}/"
        nodes, inits, source = float_view(model, tensor, prefix)  # an 8-bit cut: the model's own DQ
        pooled = pooled_features(source, shape, pooling, prefix=prefix)
        extended.graph.node.extend(nodes + pooled.nodes)
        extended.graph.initializer.extend(inits)
        extended.graph.value_info.append(helper.make_tensor_value_info(pooled.output, onnx.TensorProto.FLOAT, None))
        outputs.append(pooled.output)
        dims.append(pooled.dim)
    return prune_to(extended, outputs), dims


class FeatureSet:
    """Pooled features of every sample at each cut: float32 in memory, or float16 files on disk.

    ``features[k]`` is cut ``k``'s float32 ``[N, dim_k]`` array (read back from disk when spilled);
    iterating yields them in cut order, one at a time. Spilled values are stored divided by a
    power-of-two scale taken from the first batch (with 256x headroom); a cut whose later values
    would still overflow float16 is rewritten as float32. Spill files live in a temporary
    folder removed by :meth:`close` (or when the set is garbage-collected).

    Args:
        num_samples (int): N.
        dims (Sequence[int]): Features per sample at each cut.
        spill (bool): Keep the features on disk. Defaults to False.
    """

    def __init__(self, num_samples: int, dims: Sequence[int], spill: bool = False):
        self.num_samples = int(num_samples)
        self.dims = [int(d) for d in dims]
        self._rows = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="hapi-features-") if spill else None
        if self._tmp is None:
            self._arrays = [np.empty((self.num_samples, d), dtype=np.float32) for d in self.dims]
        else:
            self._paths = [Path(self._tmp.name) / f"cut{k}.bin" for k in range(len(self.dims))]
            self._dtypes = [np.dtype(np.float16)] * len(self.dims)
            self._scales: list[float | None] = [None] * len(self.dims)
            for path in self._paths:
                path.touch()

    @property
    def spilled(self) -> bool:
        """Whether the features are on disk."""
        return self._tmp is not None

    def append(self, values: Sequence[np.ndarray]) -> None:
        """Add the next rows: one ``[rows, dim_k]`` array per cut."""
        rows = len(values[0])
        if self._rows + rows > self.num_samples:
            raise ValueError(f"FeatureSet holds {self.num_samples} samples; got {self._rows + rows}")
        for k, v in enumerate(values):
            v = v.reshape(rows, -1)
            if self._tmp is None:
                self._arrays[k][self._rows : self._rows + rows] = v
            else:
                self._write(k, v)
        self._rows += rows

    def _write(self, k: int, v: np.ndarray) -> None:
        top = float(np.abs(v).max(initial=0.0))
        if self._scales[k] is None:
            self._scales[k] = 2.0 ** np.ceil(np.log2(max(top, 1e-30) / 256.0)) if top > 256 else 1.0
        scale = self._scales[k]
        if self._dtypes[k] == np.float16 and top / scale > 60000:  # would overflow: keep this cut as float32
            old = np.fromfile(self._paths[k], dtype=np.float16).astype(np.float32)
            old.tofile(self._paths[k])
            self._dtypes[k] = np.dtype(np.float32)
        with open(self._paths[k], "ab") as f:
            (v / scale).astype(self._dtypes[k]).tofile(f)

    def __len__(self) -> int:
        return len(self.dims)

    def __getitem__(self, k: int) -> np.ndarray:
        if self._tmp is None:
            return self._arrays[k]
        data = np.fromfile(self._paths[k], dtype=self._dtypes[k]).reshape(-1, self.dims[k])
        out = data.astype(np.float32)
        if self._scales[k] not in (None, 1.0):
            out *= np.float32(self._scales[k])
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self.dims)):
            yield self[k]

    def close(self) -> None:
        """Remove the spill files (a no-op in memory)."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "FeatureSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def collect_features(
    model: onnx.ModelProto,
    data: "DataSource | np.ndarray",
    cuts: Sequence[tuple[str, Sequence]],
    pooling: str = "gap",
    batch_size: int | None = None,
    progress: Progress | None = None,
    spill_bytes: int = SPILL_BYTES,
) -> FeatureSet:
    """Pooled features of every sample at every cut, from one batched ORT pass over ``data``.

    Args:
        model (onnx.ModelProto): The backbone (not modified).
        data (DataSource | np.ndarray): The samples, fitted to the model (see
            :func:`check_labelled`), or float32 inputs ``[N, ...]``.
        cuts (Sequence[tuple[str, Sequence]]): ``(tensor, shape)`` of each cut.
        pooling (str): ``auto``, ``gap`` or ``gap+2x2``. Defaults to "gap".
        batch_size (int | None): Samples per ORT run. Defaults to None: see :func:`run_batch_size`.
        progress (Progress | None): Called with ``(done, total)`` after each batch. Defaults to None.
        spill_bytes (int): Keep the features on disk (float16) when they would take more than this
            in memory as float32. Defaults to ``SPILL_BYTES``.

    Returns:
        FeatureSet: float32 ``[N, dim_k]`` per cut (close it to remove spill files).
    """
    if isinstance(data, np.ndarray):
        data = Dataset(data)
    features_model, dims = feature_model(model, cuts, pooling)
    session = create_session(features_model)
    name = image_input(model).name
    out_names = [o.name for o in features_model.graph.output]
    n = len(data)
    batch = run_batch_size(model, batch_size, data.image_shape)
    features = FeatureSet(n, dims, spill=4 * n * sum(dims) > spill_bytes)
    done = 0
    if progress is not None:
        progress(0, n)
    try:
        for chunk, rows in model_batches(model, data, batch):
            outs = session.run(out_names, {name: chunk})
            features.append([o.reshape(len(o), -1)[:rows] for o in outs])
            done += rows
            if progress is not None:
                progress(done, n)
    except BaseException:
        features.close()
        raise
    return features
