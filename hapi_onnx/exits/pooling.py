"""Pooled features at a cut tensor, as ONNX nodes.

The same nodes are used twice: appended to the backbone to collect training features with ONNX
Runtime (so ORT only ever returns pooled vectors, never whole feature maps), and again at the
front of each grafted exit head, so a head sees exactly the features it was fitted on.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from hapi_onnx.errors import HapiError

POOLINGS = ("auto", "gap", "gap+2x2")
AUTO_GRID_MAX_FEATURES = 2048
"""``auto`` pools with ``gap+2x2`` where that gives at most this many features, else with ``gap``."""


def resolve_pooling(pooling: str, shape: Sequence[int | str | None]) -> str:
    """The pooling used at a cut of ``shape``: ``pooling`` itself, or ``auto`` resolved.

    ``auto`` is ``gap+2x2`` where ``5 x C <= AUTO_GRID_MAX_FEATURES`` (up to 409 channels: the
    grid's spatial detail helps early, narrow cuts most) and ``gap`` on wider cuts, whose heads
    would otherwise read 5 x 512 .. 5 x 2048 features and cost five times as much to fit and run.

    Raises:
        HapiError: when ``pooling`` is unknown.
    """
    if pooling not in POOLINGS:
        raise HapiError(f"pooling must be one of {', '.join(POOLINGS)}. Got {pooling!r} instead.")
    if pooling != "auto":
        return pooling
    channels = shape[1] if len(shape) >= 2 else None
    wide = isinstance(channels, int) and 5 * channels > AUTO_GRID_MAX_FEATURES
    return "gap" if wide or len(shape) != 4 else "gap+2x2"


@dataclass(frozen=True)
class PooledFeatures:
    """Nodes that turn a cut tensor into a flat feature vector per sample.

    Attributes:
        nodes (list[onnx.NodeProto]): The pooling nodes, in order; they read only the cut tensor.
        output (str): Name of the ``[N, dim]`` float feature tensor they produce.
        dim (int): Features per sample.
    """

    nodes: list[onnx.NodeProto]
    output: str
    dim: int


def _grid_pool(size: int) -> tuple[int, int, int]:
    """Kernel, stride and number of windows that cover an axis of ``size`` with (at most) 2 windows."""
    if size < 2:
        return 1, 1, 1
    kernel = math.ceil(size / 2)
    return kernel, size - kernel, 2


def pooled_features(
    tensor: str, shape: Sequence[int | str | None], pooling: str, prefix: str
) -> PooledFeatures:
    """Build the nodes that pool ``tensor`` into one feature vector per sample.

    ``gap`` is a global average pool (C features for an ``[N, C, ...]`` map). ``gap+2x2`` adds the
    average of each quadrant of an ``[N, C, H, W]`` map (odd sizes use two overlapping windows), for
    ``C * (1 + 4)`` features: a little spatial layout for the head, still independent of H and W.
    A 2-D ``[N, F]`` tensor is used as it is.

    Args:
        tensor (str): The cut tensor.
        shape (Sequence): Its shape; the channel axis (and H, W for ``gap+2x2``) must be static.
        pooling (str): One of :data:`POOLINGS`.
        prefix (str): Unique prefix for the names of the new nodes and tensors.

    Returns:
        PooledFeatures: The nodes, their output name and the feature dimension.

    Raises:
        HapiError: when ``pooling`` is unknown or the tensor's shape does not allow it.
    """
    pooling = resolve_pooling(pooling, shape)
    rank = len(shape)
    channels = shape[1] if rank >= 2 else None
    if rank < 2 or not isinstance(channels, int) or channels <= 0:
        raise HapiError(
            f"Exit tensor {tensor!r} must have a static shape [N, C, ...] to carry a head. "
            f"Got shape {list(shape)} instead; export the model with a fixed input size."
        )
    flat = f"{prefix}features"
    if rank == 2:
        return PooledFeatures([helper.make_node("Identity", [tensor], [flat], name=f"{prefix}identity")],
                              flat, channels)
    gap, gap_flat = f"{prefix}gap", f"{prefix}gap_flat"
    nodes = [
        helper.make_node("GlobalAveragePool", [tensor], [gap], name=f"{prefix}gap"),
        helper.make_node("Flatten", [gap], [gap_flat if pooling != "gap" else flat], axis=1,
                         name=f"{prefix}gap_flatten"),
    ]
    if pooling == "gap":
        return PooledFeatures(nodes, flat, channels)
    spatial = list(shape[2:])
    if rank != 4 or not all(isinstance(s, int) and s > 0 for s in spatial):
        raise HapiError(
            f"pooling 'gap+2x2' needs a static [N, C, H, W] exit tensor; {tensor!r} has shape "
            f"{list(shape)}. Use --pooling gap, or export the model with a fixed input size."
        )
    (kh, sh, gh), (kw, sw, gw) = _grid_pool(spatial[0]), _grid_pool(spatial[1])
    if gh * gw == 1:  # a 1x1 map: the grid would repeat the global average
        nodes[-1].output[0] = flat
        return PooledFeatures(nodes, flat, channels)
    grid, grid_flat = f"{prefix}grid", f"{prefix}grid_flat"
    nodes += [
        helper.make_node("AveragePool", [tensor], [grid], kernel_shape=[kh, kw], strides=[sh, sw],
                         name=f"{prefix}grid_pool"),
        helper.make_node("Flatten", [grid], [grid_flat], axis=1, name=f"{prefix}grid_flatten"),
        helper.make_node("Concat", [gap_flat, grid_flat], [flat], axis=1, name=f"{prefix}concat"),
    ]
    return PooledFeatures(nodes, flat, channels * (1 + gh * gw))


def quadrant_features(tensor: str, shape: Sequence[int | str | None], prefix: str) -> PooledFeatures | None:
    """The ``[N, C * 4]`` quadrant averages of an ``[N, C, H, W]`` map with even H and W, else None.

    With exact quadrants the global average is the mean of the four quadrant averages, so a linear
    head fitted on ``gap+2x2`` features can read these alone (its GAP weights folded in, see
    :func:`fold_gap_into_quadrants`): two nodes instead of five in front of the Gemm.
    """
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 and s % 2 == 0 for s in shape[2:]):
        return None
    (kh, sh, _), (kw, sw, _) = _grid_pool(shape[2]), _grid_pool(shape[3])
    grid, flat = f"{prefix}grid", f"{prefix}features"
    nodes = [
        helper.make_node("AveragePool", [tensor], [grid], kernel_shape=[kh, kw], strides=[sh, sw],
                         name=f"{prefix}grid_pool"),
        helper.make_node("Flatten", [grid], [flat], axis=1, name=f"{prefix}grid_flatten"),
    ]
    return PooledFeatures(nodes, flat, shape[1] * 4)


def fold_gap_into_quadrants(weight: np.ndarray, channels: int) -> np.ndarray:
    """``[C * 5, K]`` weights over ``gap+2x2`` features -> ``[C * 4, K]`` over the quadrants alone.

    Feature ``c`` (GAP of channel c) equals the mean of quadrant features ``4c .. 4c+3``, so its
    weight row is spread over them, a quarter each: the logits are the same up to float rounding.
    """
    gap, grid = weight[:channels], weight[channels:]
    return (grid + np.repeat(gap, 4, axis=0) / 4).astype(weight.dtype)
