"""Small over-provisioned (early-exit) ONNX models shared by the bundle, runtime and evaluate tests.

No tests here: ``make_ee_model`` builds a real residual CNN with onnx.helper and a softmax head
at three intermediate tensors, recorded with :class:`ExitLayout` as ``attach`` would.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.exits.layout import ExitLayout, ExitSpec

NUM_CLASSES = 5
INPUT_SHAPE = (1, 12, 12)


def _conv(nodes, inits, rng, name, x, cin, cout, stride=1):
    w = rng.normal(0, 0.6, (cout, cin, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (cout,)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"],
                                  kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
    return f"{name}.out"


def _head(nodes, inits, rng, name, x, cin, softmax=True, scale=2.5):
    w = rng.normal(0, scale, (cin, NUM_CLASSES)).astype(np.float32)
    b = rng.normal(0, 0.2, (NUM_CLASSES,)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], [f"{name}.gap"]),
        helper.make_node("Flatten", [f"{name}.gap"], [f"{name}.flat"], axis=1),
        helper.make_node("Gemm", [f"{name}.flat", f"{name}.w", f"{name}.b"], [f"{name}.logits"]),
    ]
    if not softmax:
        return f"{name}.logits"
    nodes.append(helper.make_node("Softmax", [f"{name}.logits"], [f"{name}.probs"], axis=1))
    return f"{name}.probs"


def make_ee_model(seed: int = 0, opset: int = 17, final_is_probability: bool = False) -> onnx.ModelProto:
    """A residual CNN on float32[N, 1, 12, 12] with exits exit0..exit2 and a 5-class final classifier.

    Args:
        seed (int): Weight seed. Defaults to 0.
        opset (int): Default-domain opset. Defaults to 17.
        final_is_probability (bool): End the backbone in Softmax instead of logits. Defaults to False.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    t = _conv(nodes, inits, rng, "c1", "input", 1, 4)
    nodes.append(helper.make_node("Relu", [t], ["t1"]))
    t = _conv(nodes, inits, rng, "c2", "t1", 4, 8, stride=2)
    nodes.append(helper.make_node("Relu", [t], ["t2"]))
    t = _conv(nodes, inits, rng, "c3", "t2", 8, 8)
    nodes += [helper.make_node("Relu", [t], ["c3.relu"]), helper.make_node("Add", ["c3.relu", "t2"], ["t3"])]
    t = _conv(nodes, inits, rng, "c4", "t3", 8, 8, stride=2)
    nodes.append(helper.make_node("Relu", [t], ["t4"]))
    final = _head(nodes, inits, rng, "fc", "t4", 8, softmax=final_is_probability, scale=1.5)
    exits = []
    for k, (tensor, cin) in enumerate([("t1", 4), ("t3", 8), ("t4", 8)]):
        out = _head(nodes, inits, rng, f"head{k}", tensor, cin)
        exits.append(ExitSpec(name=f"exit{k}", tensor=tensor, output=out))
    float_out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", NUM_CLASSES])  # noqa: E731
    graph = helper.make_graph(
        nodes, "ee_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *INPUT_SHAPE])],
        [float_out(final)] + [float_out(e.output) for e in exits],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    ExitLayout(
        input="input", final_output=final, final_is_probability=final_is_probability,
        num_classes=NUM_CLASSES, exits=exits, source_fingerprint="0" * 64,
    ).to_model(model)
    return model


def sample_images(n: int, seed: int = 1) -> np.ndarray:
    """float32[n, 1, 12, 12] inputs in [0, 1)."""
    return np.random.default_rng(seed).random((n, *INPUT_SHAPE), dtype=np.float32)


def reference_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every graph output of ``model`` on ``x``, from a plain ONNX Runtime session."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
