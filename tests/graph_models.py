"""Small seeded CNNs built with onnx.helper (opset 17), each with the tensors it knows to be block boundaries.

Every builder returns a :class:`TestNet`: the model (input ``image`` of fixed batch 1, as
exporters often write it), the block-boundary tensors that must be offered as exits, the
tensors inside multi-branch blocks that must not be, and the pre-activation tensors that
must not be either.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class TestNet:
    """A test model and its ground truth."""

    __test__ = False  # not a pytest class

    model: onnx.ModelProto
    boundaries: list[str]
    inside: list[str] = field(default_factory=list)
    preact: list[str] = field(default_factory=list)


class NetBuilder:
    """Appends nodes with fresh names and He-initialised weights; every method returns the output name."""

    def __init__(self, seed: int, channels: int = 3, size: int = 16):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.channels = channels
        self.size = size
        self.input = "image"

    def fresh(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def const(self, array: np.ndarray, kind: str = "w") -> str:
        name = self.fresh(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], kind: str | None = None, **attrs) -> str:
        out = self.fresh(kind or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{out}_node", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, cout).astype(np.float32)
        pad = k // 2
        return self.op("Conv", [x, self.const(w), self.const(b, "b")], kind="conv", kernel_shape=[k, k],
                       strides=[stride, stride], pads=[pad] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        scale = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        bias = self.rng.normal(0, 0.1, c).astype(np.float32)
        mean = self.rng.normal(0, 0.1, c).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        params = ((scale, "g"), (bias, "beta"), (mean, "mu"), (var, "var"))
        names = [self.const(a, kind) for a, kind in params]
        return self.op("BatchNormalization", [x, *names], kind="bn", epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def relu6(self, x: str) -> str:
        lo = self.const(np.array(0.0, np.float32), "lo")
        hi = self.const(np.array(6.0, np.float32), "hi")
        return self.op("Clip", [x, lo, hi], kind="relu6")

    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])], kind="silu")

    def maxpool(self, x: str, k: int = 2, stride: int = 2, pad: int = 0) -> str:
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def avgpool(self, x: str) -> str:
        return self.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def head(self, x: str, c: int, classes: int = 10, torch_flatten: bool = False) -> str:
        pooled = self.op("GlobalAveragePool", [x], kind="gap")
        if torch_flatten:  # Shape-Gather-Unsqueeze-Concat-Reshape, as torch exports x.view(x.size(0), -1)
            shape = self.op("Shape", [pooled])
            batch = self.op("Gather", [shape, self.const(np.array(0, np.int64), "idx")], axis=0)
            batch1 = self.op("Unsqueeze", [batch, self.const(np.array([0], np.int64), "axes")])
            minus1 = self.op("Constant", [], kind="minus1",
                             value=numpy_helper.from_array(np.array([-1], np.int64)))
            target = self.op("Concat", [batch1, minus1], axis=0)
            flat = self.op("Reshape", [pooled, target], kind="flat")
        else:
            flat = self.op("Flatten", [pooled], kind="flat", axis=1)
        w = self.rng.normal(0, np.sqrt(1.0 / c), (classes, c)).astype(np.float32)
        b = np.zeros(classes, np.float32)
        return self.op("Gemm", [flat, self.const(w), self.const(b, "b")], kind="logits", transB=1)

    def build(self, output: str, classes: int = 10, name: str = "net") -> onnx.ModelProto:
        shape = [1, self.channels, self.size, self.size]
        x = helper.make_tensor_value_info(self.input, TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, classes])
        graph = helper.make_graph(self.nodes, name, [x], [y], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def plain_chain(seed: int = 0) -> TestNet:
    """conv-bn-relu, maxpool, conv-bn-silu, conv-relu, head with a torch-style Shape/Reshape flatten."""
    nb = NetBuilder(seed)
    c1 = nb.conv(nb.input, 3, 8)
    b1 = nb.bn(c1, 8)
    r1 = nb.relu(b1)
    p1 = nb.maxpool(r1)
    c2 = nb.conv(p1, 8, 16)
    b2 = nb.bn(c2, 16)
    s2 = nb.silu(b2)
    c3 = nb.conv(s2, 16, 16, stride=2)
    r3 = nb.relu(c3)
    out = nb.head(r3, 16, torch_flatten=True)
    return TestNet(nb.build(out, name="chain"), boundaries=[r1, p1, s2, r3], preact=[c1, b1, c2, b2, c3])


def resnet(seed: int = 0) -> TestNet:
    """Stem + basic blocks: identity shortcut, projection shortcut (stride 2), identity shortcut."""
    nb = NetBuilder(seed)
    stem_c = nb.conv(nb.input, 3, 16)
    stem_b = nb.bn(stem_c, 16)
    x = nb.relu(stem_b)
    boundaries, inside, preact = [x], [], [stem_c, stem_b]
    for cin, cout, stride in ((16, 16, 1), (16, 32, 2), (32, 32, 1)):
        c1 = nb.conv(x, cin, cout, stride=stride)
        b1 = nb.bn(c1, cout)
        r1 = nb.relu(b1)
        c2 = nb.conv(r1, cout, cout)
        b2 = nb.bn(c2, cout)
        if stride != 1 or cin != cout:
            sc_c = nb.conv(x, cin, cout, k=1, stride=stride)
            shortcut = nb.bn(sc_c, cout)
            inside += [sc_c, shortcut]
        else:
            shortcut = x
        added = nb.op("Add", [b2, shortcut])
        x = nb.relu(added)
        boundaries.append(x)
        inside += [c1, b1, r1, c2, b2, added]
        preact.append(added)
    out = nb.head(x, 32)
    return TestNet(nb.build(out, name="resnet"), boundaries, inside, preact)


def mobilenetv2(seed: int = 0) -> TestNet:
    """Stem + inverted residuals (expand 1x1, depthwise 3x3, linear 1x1 projection, residual add)."""
    nb = NetBuilder(seed)
    stem_c = nb.conv(nb.input, 3, 16, stride=1)
    stem_b = nb.bn(stem_c, 16)
    x = nb.relu6(stem_b)
    boundaries, inside, preact = [x], [], [stem_c, stem_b]
    for cin, cout, stride, expand in ((16, 16, 1, 2), (16, 24, 2, 4), (24, 24, 1, 4)):
        hidden = cin * expand
        e = nb.relu6(nb.bn(nb.conv(x, cin, hidden, k=1), hidden))
        d_c = nb.conv(e, hidden, hidden, k=3, stride=stride, group=hidden)
        d = nb.relu6(nb.bn(d_c, hidden))
        p_c = nb.conv(d, hidden, cout, k=1)
        p = nb.bn(p_c, cout)
        if stride == 1 and cin == cout:
            y = nb.op("Add", [p, x])
            inside += [e, d_c, d, p_c, p]
        else:
            y = p
            preact.append(p_c)
        boundaries.append(y)
        x = y
    last_c = nb.conv(x, 24, 32, k=1)
    last = nb.relu6(nb.bn(last_c, 32))
    boundaries.append(last)
    preact.append(last_c)
    out = nb.head(last, 32)
    return TestNet(nb.build(out, name="mobilenetv2"), boundaries, inside, preact)


def inception(seed: int = 0) -> TestNet:
    """Stem + two four-branch inception blocks joined by Concat, max-pooled in between."""
    nb = NetBuilder(seed)
    x = nb.relu(nb.bn(nb.conv(nb.input, 3, 16), 16))
    boundaries, inside = [x], []
    cin = 16
    for block in range(2):
        b1 = nb.relu(nb.conv(x, cin, 8, k=1))
        b2a = nb.relu(nb.conv(x, cin, 8, k=1))
        b2 = nb.relu(nb.conv(b2a, 8, 8, k=3))
        b3a = nb.relu(nb.conv(x, cin, 4, k=1))
        b3b = nb.relu(nb.conv(b3a, 4, 4, k=3))
        b3 = nb.relu(nb.conv(b3b, 4, 8, k=3))
        b4a = nb.maxpool(x, k=3, stride=1, pad=1)
        b4 = nb.relu(nb.conv(b4a, cin, 8, k=1))
        x = nb.op("Concat", [b1, b2, b3, b4], axis=1)
        boundaries.append(x)
        inside += [b1, b2a, b2, b3a, b3b, b3, b4a, b4]
        cin = 32
        if block == 0:
            x = nb.maxpool(x)
            boundaries.append(x)
    out = nb.head(x, cin)
    return TestNet(nb.build(out, name="inception"), boundaries, inside)


def densenet(seed: int = 0) -> TestNet:
    """Stem + two dense blocks (BN-ReLU-Conv layers, growing Concat) with a transition in between."""
    nb = NetBuilder(seed)
    x = nb.relu(nb.bn(nb.conv(nb.input, 3, 8), 8))
    boundaries, inside, preact = [x], [], []
    c = 8
    for block in range(2):
        features = [x]
        for _ in range(3):
            joined = features[0] if len(features) == 1 else nb.op("Concat", features, axis=1)
            if len(features) > 1:
                inside.append(joined)
            cj = 8 + 4 * (len(features) - 1) if block == 0 else c + 4 * (len(features) - 1)
            h = nb.relu(nb.bn(joined, cj))
            y = nb.conv(h, cj, 4)
            inside += [h, y]
            features.append(y)
        x = nb.op("Concat", features, axis=1)
        c = cj + 4
        if block == 0:  # transition: BN-ReLU-Conv1x1-AvgPool
            t_b = nb.bn(x, c)
            t_r = nb.relu(t_b)
            t_c = nb.conv(t_r, c, c // 2, k=1)
            x = nb.avgpool(t_c)
            preact += [t_b]
            boundaries += [t_r, x]
            c = c // 2
    final_b = nb.bn(x, c)
    final = nb.relu(final_b)
    boundaries.append(final)
    preact.append(final_b)
    out = nb.head(final, c)
    return TestNet(nb.build(out, name="densenet"), boundaries, inside, preact)


def shuffled(net: TestNet, seed: int = 0) -> TestNet:
    """The same network with its nodes stored in a random (non-topological) order."""
    model = onnx.ModelProto()
    model.CopyFrom(net.model)
    nodes = list(model.graph.node)
    order = np.random.default_rng(seed).permutation(len(nodes))
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    return TestNet(model, list(net.boundaries), list(net.inside), list(net.preact))


BUILDERS = {
    "chain": plain_chain,
    "resnet": resnet,
    "mobilenetv2": mobilenetv2,
    "inception": inception,
    "densenet": densenet,
    "shuffled_resnet": lambda seed=0: shuffled(resnet(seed), seed=seed + 1),
}


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` with a fresh single-threaded ONNX Runtime CPU session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_chain(segments: list[onnx.ModelProto], x: np.ndarray) -> list[np.ndarray]:
    """Feed ``x`` through ``segments`` one after another (each takes the previous one's outputs)."""
    values = [x]
    for seg in segments:
        names = [i.name for i in seg.graph.input]
        values = run_model(seg, dict(zip(names, values, strict=True)))
    return values
