"""Export: PyTorch (factory + state dict) and existing ONNX -> normalised ONNX verified with ONNX Runtime."""

import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.data import load_mnist_5k
from hapi_onnx.errors import HapiError
from hapi_onnx.export import MIN_OPSET, export_model, export_onnx, export_torch

SMALL_CNN = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class SmallCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


    def build():
        torch.manual_seed(0)
        model = SmallCnn()
        # Non-trivial BatchNorm statistics, so folding them into the convs is actually exercised.
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
        return model


    def build_wider():
        model = SmallCnn()
        model.fc = nn.Linear(16, 12)
        return model


    def not_a_module():
        return "model"


    class Branchy(nn.Module):
        """Python control flow on data: tracing freezes one branch, so ONNX disagrees with eager."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            y = self.conv(x).mean(dim=(2, 3))
            return y if float(x.sum()) > 0 else -y


    def branchy():
        torch.manual_seed(0)
        return Branchy()
    '''
)


@pytest.fixture()
def torch():
    return pytest.importorskip("torch")


@pytest.fixture()
def cnn_file(tmp_path):
    path = tmp_path / "small_cnn.py"
    path.write_text(SMALL_CNN)
    return path


@pytest.fixture(scope="module")
def digits():
    return load_mnist_5k().x[:40]


def _checkpoint(torch, cnn_file, tmp_path, factory="build"):
    namespace = {}
    exec(compile(SMALL_CNN, str(cnn_file), "exec"), namespace)
    model = namespace[factory]()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_export_torch_from_file_matches_torch_on_mnist(torch, cnn_file, tmp_path, digits):
    model, weights = _checkpoint(torch, cnn_file, tmp_path)
    out = tmp_path / "cnn.onnx"
    report = export_torch(f"{cnn_file}:build", weights, (1, 1, 28, 28), out, samples=digits)

    assert report.output == str(out) and report.samples == 40 and report.max_abs_diff <= 1e-4
    assert report.opset == 17 and report.input_shape == ("N", 1, 28, 28)
    assert report.output_names == ("logits",)
    # Independent check: our own ORT session on the written file, at two batch sizes.
    with torch.no_grad():
        want = model(torch.from_numpy(digits)).numpy()
    np.testing.assert_allclose(_run(out, digits), want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(_run(out, digits[:3]), want[:3], atol=1e-4, rtol=0)
    written = onnx.load(str(out))
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert "BatchNormalization" not in {n.op_type for n in written.graph.node}  # folded in eval mode
    assert "verified against PyTorch" in report.summary()


def test_export_torch_from_module_spec(torch, cnn_file, tmp_path, monkeypatch, digits):
    monkeypatch.syspath_prepend(str(tmp_path))
    _, weights = _checkpoint(torch, cnn_file, tmp_path)
    report = export_torch("small_cnn:build", weights, (2, 1, 28, 28), tmp_path / "m.onnx", samples=digits[:8])
    assert report.max_abs_diff <= 1e-4 and report.samples == 8
    # Without a checkpoint the factory's own weights are exported.
    report = export_torch("small_cnn:build", None, (1, 1, 28, 28), tmp_path / "n.onnx", opset=13)
    assert report.opset == 13 and report.sample_source.startswith("random")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("no_colon_here", "must look like"),
        ("missing_file.py:build", "does not exist"),
        ("{cnn}:nope", "has no attribute 'nope'"),
        ("{cnn}:not_a_module", "returned a str, not a torch.nn.Module"),
        ("{cnn}:build_wider", r"shape mismatch \(checkpoint vs model\) fc.weight \(10, 16\) vs \(12, 16\)"),
        ("no_such_package_xyz.models:build", "cannot import factory module"),
    ],
)
def test_export_torch_bad_factories_fail_without_output(torch, cnn_file, tmp_path, factory, message):
    _, weights = _checkpoint(torch, cnn_file, tmp_path)
    out = tmp_path / "out.onnx"
    with pytest.raises(HapiError, match=message):
        export_torch(factory.format(cnn=cnn_file), weights, (1, 1, 28, 28), out)
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_export_torch_bad_checkpoints(torch, cnn_file, tmp_path):
    out = tmp_path / "out.onnx"
    with pytest.raises(HapiError, match="does not exist"):
        export_torch(f"{cnn_file}:build", tmp_path / "none.pt", (1, 1, 28, 28), out)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HapiError, match="cannot load checkpoint"):
        export_torch(f"{cnn_file}:build", tmp_path / "junk.pt", (1, 1, 28, 28), out)
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(HapiError, match="missing conv1.bias"):
        export_torch(f"{cnn_file}:build", tmp_path / "partial.pt", (1, 1, 28, 28), out)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(HapiError, match="not a state dict"):
        export_torch(f"{cnn_file}:build", tmp_path / "list.pt", (1, 1, 28, 28), out)
    with pytest.raises(HapiError, match="four positive ints"):
        export_torch(f"{cnn_file}:build", None, (1, 28, 28), out)
    with pytest.raises(HapiError, match="fails on inputs of shape"):
        export_torch(f"{cnn_file}:build", None, (1, 3, 28, 28), out)
    assert not out.exists()


def test_export_torch_verification_failure_writes_nothing(torch, cnn_file, tmp_path, digits):
    out = tmp_path / "branchy.onnx"
    with pytest.raises(HapiError, match="verification failed: ONNX Runtime differs from PyTorch"):
        export_torch(f"{cnn_file}:branchy", None, (1, 1, 28, 28), out, samples=digits[:4])
    assert not out.exists() and list(tmp_path.glob(".*.tmp")) == []


def _opset11_cnn(batch=1, reshape_batch=False):
    """Conv -> Relu -> GlobalAveragePool -> Squeeze(axes attr) -> Gemm -> Softmax, opset 11, fixed batch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
    ]
    if reshape_batch:  # a Constant-node target: load_model cannot free the batch baked into it
        shape = numpy_helper.from_array(np.array([1, 4], np.int64))
        nodes.append(helper.make_node("Constant", [], ["shape"], value=shape))
        nodes.append(helper.make_node("Reshape", ["g", "shape"], ["s"]))
    else:
        nodes.append(helper.make_node("Squeeze", ["g"], ["s"], axes=[2, 3]))
    nodes += [
        helper.make_node("Gemm", ["s", "fc_w", "fc_b"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "opset11_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [batch, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    onnx.checker.check_model(model)
    return model


def test_export_onnx_upgrades_old_opset_and_makes_batch_dynamic(tmp_path):
    src = tmp_path / "old.onnx"
    onnx.save(_opset11_cnn(), str(src))
    before = src.read_bytes()
    report = export_onnx(src, tmp_path / "new.onnx", samples=6)

    assert MIN_OPSET == 13 and report.opset == 13 and report.max_abs_diff <= 1e-6
    assert report.input_shape == ("N", 1, 6, 6) and report.reference == "the source ONNX model"
    assert src.read_bytes() == before  # the source is never touched
    new = onnx.load(str(tmp_path / "new.onnx"))
    squeeze = next(n for n in new.graph.node if n.op_type == "Squeeze")
    assert len(squeeze.input) == 2 and not squeeze.attribute  # axes moved to an input at opset 13
    assert new.graph.value_info  # shapes inferred
    x = np.random.default_rng(1).random((5, 1, 6, 6), dtype=np.float32)
    old = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = np.concatenate([old.run(None, {"x": x[i : i + 1]})[0] for i in range(5)])
    new_session = ort.InferenceSession(str(tmp_path / "new.onnx"), providers=["CPUExecutionProvider"])
    got = new_session.run(None, {"x": x})
    np.testing.assert_allclose(got[0], want, atol=1e-6)

    report = export_onnx(src, tmp_path / "new17.onnx", opset=17)
    assert report.opset == 17 and report.samples == 8


def test_export_onnx_errors_leave_no_output(tmp_path):
    out = tmp_path / "out.onnx"
    onnx.save(_opset11_cnn(), str(tmp_path / "old.onnx"))
    with pytest.raises(HapiError, match="only upgrades"):
        export_onnx(tmp_path / "old.onnx", out, opset=12)
    with pytest.raises(HapiError, match="does not exist"):
        export_onnx(tmp_path / "missing.onnx", out)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(HapiError, match="not an ONNX model"):
        export_onnx(tmp_path / "junk.onnx", out)
    with pytest.raises(HapiError, match="must be an .onnx file"):
        export_onnx(tmp_path / "old.onnx", tmp_path / "out.txt")
    with pytest.raises(HapiError, match=r"differs from the model's input"):
        export_onnx(tmp_path / "old.onnx", out, input_shape=(1, 1, 7, 7))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "old.onnx"]


def test_export_onnx_frees_a_batch_baked_into_a_constant_reshape_target(tmp_path):
    onnx.save(_opset11_cnn(reshape_batch=True), str(tmp_path / "fixed.onnx"))
    report = export_onnx(tmp_path / "fixed.onnx", tmp_path / "out.onnx")
    assert report.input_shape[0] == "N" and report.max_abs_diff <= 1e-4


def test_export_model_dispatches_by_source_kind(tmp_path):
    onnx.save(_opset11_cnn(), str(tmp_path / "old.onnx"))
    assert export_model(tmp_path / "old.onnx", tmp_path / "a.onnx").opset == 13
    with pytest.raises(HapiError, match="give --factory"):
        export_model(tmp_path / "w.pt", tmp_path / "b.onnx")
    with pytest.raises(HapiError, match="needs --input-shape"):
        export_model(tmp_path / "w.pt", tmp_path / "b.onnx", factory="m.py:build")
    with pytest.raises(HapiError, match="needs none"):
        export_model(tmp_path / "old.onnx", tmp_path / "b.onnx", factory="m.py:build")


def test_demo_mnist_model_is_accurate_and_matches_its_weights(torch, tmp_path):
    """The committed demo: model.onnx scores >= 97% on the held-out split and is what the weights export to."""
    from pathlib import Path

    from hapi_onnx.data import mnist_splits

    demo = Path(__file__).resolve().parents[1] / "examples" / "mnist"
    test = mnist_splits(seed=0)["test"]
    logits = _run(demo / "model.onnx", test.x)
    assert np.mean(logits.argmax(1) == test.y) >= 0.97
    report = export_torch(f"{demo / 'model.py'}:build_model", demo / "resnet_mnist.pt", (1, 1, 28, 28),
                          tmp_path / "again.onnx", samples=test.x[:64])
    assert report.max_abs_diff <= 1e-4
    np.testing.assert_allclose(_run(tmp_path / "again.onnx", test.x[:200]), logits[:200], atol=1e-4, rtol=0)
