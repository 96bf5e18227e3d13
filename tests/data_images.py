"""Small photo-like data for the data tests: an RGB CNN and class folders of mixed-size images."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COLORS = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 210]], dtype=np.float32)  # one hue per class


def rgb_cnn(size: int = 20, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """conv(8)-relu -> conv(16, stride 2)-relu -> conv(16)-relu -> GAP -> Gemm: float32 [N, 3, size, size]."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1] * 4),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "rgb_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [weight("w1", 8, 3, 3, 3), weight("w2", 16, 8, 3, 3), weight("w3", 16, 16, 3, 3), weight("fc", classes, 16)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_photos(root: Path, per_class: int, seed: int, classes=("cat", "dog", "owl"), fmt: str = "png") -> Path:
    """``root/<class>/<i>.<fmt>``: noisy images tinted by class, of mixed sizes (22..40 px a side)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(22, 41, 2))
            pixels = COLORS[c % len(COLORS)] + rng.normal(0, 45, (h, w, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{seed}_{i:03d}.{fmt}")
    return root
