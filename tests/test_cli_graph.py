"""`hapi-onnx exits` and `hapi-onnx split` through click, on real models: output, files, and user errors."""

import json

import numpy as np
import onnx
import pytest
from graph_models import mobilenetv2, resnet, run_chain, run_model
from onnx import TensorProto, helper

from hapi_onnx.files import OUTPUT_RECORD, sha256_file
from hapi_onnx.graph import SplitIndex, candidate_exits, load_model


@pytest.fixture
def resnet_file(tmp_path):
    path = tmp_path / "resnet.onnx"
    onnx.save(resnet().model, path)
    return path


def test_exits_table(run_cli, resnet_file):
    result = run_cli("exits", resnet_file)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "tensor", "shape", "MACs", "(cum.)", "fraction"]
    expected = candidate_exits(load_model(resnet_file))
    rows = lines[1:-1]
    assert [row.split()[1] for row in rows] == [c.tensor for c in expected]
    assert rows[0].split()[2] == "Nx16x16x16" and rows[0].rstrip().endswith("%")
    assert len({row.index(row.split()[2]) for row in rows}) == 1, "shape column aligned"
    assert lines[-1] == f"{len(expected)} candidate exit(s)."


def test_exits_json_with_max_candidates(run_cli, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mobilenetv2().model, path)
    result = run_cli("exits", path, "--json", "--max-candidates", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = candidate_exits(load_model(path), max_candidates=3)
    assert [d["tensor"] for d in data] == [c.tensor for c in expected] and len(data) == 3
    assert data[0]["shape"][0] == "N" and set(data[0]) == {"tensor", "shape", "index", "macs", "fraction", "dtype"}
    assert run_cli("exits", path, "--max-candidates", "0").exit_code == 2


def test_split_default_writes_every_candidate_segment(run_cli, resnet_file, tmp_path):
    out = tmp_path / "segs"
    result = run_cli("split", resnet_file, "-o", out)
    assert result.exit_code == 0, result.output
    model = load_model(resnet_file)
    cuts = [c.tensor for c in candidate_exits(model)]
    index = SplitIndex.load(out / "index.json")
    assert index.cuts == cuts and index.input == "image"
    assert [e.file for e in index.segments] == [f"segment_{k:02d}.onnx" for k in range(len(cuts) + 1)]
    written = [e.file for e in index.segments] + ["index.json", OUTPUT_RECORD]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    chained = [index.segments[0].inputs] + [e.outputs for e in index.segments]
    assert chained[1:-1] == [[c] for c in cuts]
    segments = []
    for entry in index.segments:
        assert sha256_file(out / entry.file) == entry.sha256
        segments.append(onnx.load(out / entry.file))
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_chain(segments, x)[0], run_model(model, {"image": x})[0], atol=1e-5)


def test_split_at_named_tensors_in_any_order(run_cli, resnet_file, tmp_path):
    cuts = [c.tensor for c in candidate_exits(load_model(resnet_file))]
    out = tmp_path / "two"
    result = run_cli("split", resnet_file, "-o", out, "--at", f"{cuts[2]}, {cuts[0]}")
    assert result.exit_code == 0, result.output
    assert SplitIndex.load(out / "index.json").cuts == [cuts[0], cuts[2]]
    # splitting again replaces the old split directory
    assert run_cli("split", resnet_file, "-o", out, "--at", cuts[1]).exit_code == 0
    assert SplitIndex.load(out / "index.json").cuts == [cuts[1]]
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_RECORD, "index.json", "segment_00.onnx", "segment_01.onnx"]


def _no_image_input_model(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 784])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


BAD_MODELS = {
    "missing": (lambda p: None, "does not exist or is not a file"),
    "not_onnx": (lambda p: p.write_text("print('hello')\n"), "is not an ONNX model"),
    "truncated": (lambda p: p.write_bytes(resnet().model.SerializeToString()[:3000]), "ONNX model"),
    "no_image_input": (_no_image_input_model, "expected one rank-4 (N,C,H,W) float input"),
}


@pytest.mark.parametrize("command", ["exits", "split"])
@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_models_exit_2_with_one_line(run_cli, tmp_path, command, case):
    make, message = BAD_MODELS[case]
    path = tmp_path / "model.onnx"
    make(path)
    out = tmp_path / "out"
    args = ["exits", path] if command == "exits" else ["split", path, "-o", out]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["model.onnx"] if case != "missing" else [])


@pytest.mark.parametrize(
    "at, message",
    [("{boundary},bogus", "'bogus' is not a tensor of this model"),
     ("{inside}", "not a single-tensor cut point"),
     ("image", "the model's input")],
)
def test_split_bad_at_leaves_no_directory(run_cli, resnet_file, tmp_path, at, message):
    net = resnet()
    at = at.format(boundary=net.boundaries[0], inside=net.inside[2])
    out = tmp_path / "deep" / "segs"
    result = run_cli("split", resnet_file, "-o", out, "--at", at)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.parent.exists()


def test_split_refuses_to_overwrite_other_directories(run_cli, resnet_file, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli("split", resnet_file, "-o", out)
    assert result.exit_code == 2 and "no split record" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
