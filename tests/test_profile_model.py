"""profile_model on small real early-exit models: pieces chain, tables round-trip, CLI exit codes."""

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FAST_TIMING
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.bundle import stage_graphs
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.cut import cut_at_exits, full_model
from hapi_onnx.exits.layout import ExitLayout, ExitSpec
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.graph.decision import CLASS_OUTPUT, CONFIDENCE_OUTPUT, DECISION_OUTPUTS, PROBS_OUTPUT
from hapi_onnx.profile import LatencyTable, load_preset, profile_model, table_lines
from hapi_onnx.profile.profile import RuntimeEntryCalls
from hapi_onnx.runtime import BoundCall


def build_ee_model(num_exits: int = 2, channels: int = 4, classes: int = 3, size: int = 8) -> onnx.ModelProto:
    """A small conv net with ``num_exits`` GAP->Flatten->Gemm->Softmax heads as extra outputs."""
    rng = np.random.default_rng(42)
    inits, nodes = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, size, size])

    def const(name, shape):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name))
        return name

    prev, cin, exits, head_outputs = "x", 1, [], []
    for i in range(num_exits + 1):
        w, b = const(f"conv{i}.w", (channels, cin, 3, 3)), const(f"conv{i}.b", (channels,))
        nodes.append(helper.make_node("Conv", [prev, w, b], [f"conv{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"block{i}"]))
        prev, cin = f"block{i}", channels
        if i < num_exits:
            exits.append(ExitSpec(f"exit{i}", prev, f"exit{i}_prob"))
    for k, spec in enumerate(exits):
        nodes += [
            helper.make_node("GlobalAveragePool", [spec.tensor], [f"h{k}.gap"]),
            helper.make_node("Flatten", [f"h{k}.gap"], [f"h{k}.flat"]),
            helper.make_node(
                "Gemm", [f"h{k}.flat", const(f"h{k}.w", (classes, channels)), const(f"h{k}.b", (classes,))],
                [f"h{k}.logits"], transB=1,
            ),
            helper.make_node("Softmax", [f"h{k}.logits"], [spec.output], axis=1),
        ]
        head_outputs.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, ["N", classes]))
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", const("fc.w", (classes, channels)), const("fc.b", (classes,))],
                         ["logits"], transB=1),
    ]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    graph = helper.make_graph(nodes, "ee", [x], [logits, *head_outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ExitLayout("x", "logits", False, classes, exits, "0" * 64).to_model(model)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def ee_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ee") / "ee.onnx"
    onnx.save(build_ee_model(), str(path))
    return path


@pytest.fixture(scope="module")
def table(ee_path, fast_preset):
    return profile_model(ee_path, fast_preset)


def _run(path_or_model, x):
    session = ort.InferenceSession(str(path_or_model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x}), strict=True))


def split_at_exits(model):
    return cut_at_exits(model, ExitLayout.from_model(model))


def test_split_pieces_chain_and_reproduce_the_full_model(ee_path):
    model = load_model(ee_path)
    pieces = split_at_exits(model)
    monolithic = full_model(model, pieces.layout)
    segs, heads = pieces.segments, pieces.heads
    decision = list(DECISION_OUTPUTS)
    assert [p.name for p in segs] == ["segment0", "segment1", "segment2"]
    assert [p.name for p in heads] == ["head0", "head1"]
    assert segs[0].inputs == ["x"] and segs[-1].outputs == decision
    for k in range(len(segs) - 1):
        assert segs[k].outputs == segs[k + 1].inputs
        assert heads[k].inputs == segs[k].outputs and heads[k].outputs == decision
    # Running the pieces one after another gives exactly the full model's outputs, and the
    # decision outputs are the top-1 class and its probability.
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    full = _run(ee_path, x)
    value = x
    for k, seg in enumerate(segs):
        out = _run_named(seg.model, value)
        if k < len(heads):
            value = out[seg.outputs[0]]
            got = _run_named(heads[k].model, value)
            np.testing.assert_allclose(got[PROBS_OUTPUT], full[f"exit{k}_prob"], rtol=1e-5)
            _assert_decision(got)
    logits = full["logits"]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out[PROBS_OUTPUT], expected / expected.sum(1, keepdims=True), rtol=1e-5)
    _assert_decision(out)
    np.testing.assert_allclose(_run_named(monolithic.model, x)["logits"], logits, rtol=1e-5)
    assert {o.name for o in monolithic.model.graph.output} == {"logits"}


def test_pieces_hold_exactly_the_ops_of_the_bundle_stages(ee_path):
    """Each stage of a bundle = its segment pieces + its exit's head piece, op for op."""
    model = load_model(ee_path)
    pieces = split_at_exits(model)
    stages = stage_graphs(model, ExitLayout.from_model(model), ["exit1"])
    ops = [collections.Counter(n.op_type for n in p.model.graph.node) for p in pieces.segments]
    head_ops = collections.Counter(n.op_type for n in pieces.heads[1].model.graph.node)
    stage_ops = [collections.Counter(n.op_type for n in s.model.graph.node) for s in stages]
    assert stage_ops[0] == ops[0] + ops[1] + head_ops
    assert stage_ops[1] == ops[2]
    assert {"ArgMax", "ReduceMax"} <= set(head_ops) and {"Softmax", "ArgMax", "ReduceMax"} <= set(ops[2])


def _assert_decision(out):
    probs = out[PROBS_OUTPUT]
    np.testing.assert_array_equal(out[CLASS_OUTPUT], probs.argmax(1))
    np.testing.assert_array_equal(out[CONFIDENCE_OUTPUT], probs.max(1))


def _run_named(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


def test_profile_model_table_describes_every_piece(table, ee_path, fast_preset):
    assert table.exit_names == ["exit0", "exit1", "final"]
    assert [p.name for p in table.segments] == ["segment0", "segment1", "segment2"]
    assert [p.name for p in table.heads] == ["head0", "head1"]
    for k in range(len(table.segments) - 1):
        assert table.segments[k].outputs == table.segments[k + 1].inputs
        assert table.heads[k].inputs == table.segments[k].outputs
    assert table.segments[0].inputs == ["x"] and table.segments[-1].outputs == list(DECISION_OUTPUTS)
    assert all(h.outputs == list(DECISION_OUTPUTS) for h in table.heads)
    assert "decision" in table.extra["decision_ops"]
    everything = [p.stats for p in table.segments + table.heads] + [table.overhead, table.monolithic]
    for s in everything:
        assert FAST_TIMING["min_runs"] <= s.n <= FAST_TIMING["max_runs"]
        assert s.warmup >= 1
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
    assert table.batch_size == 1
    assert table.device == str(fast_preset)
    assert table.preset["name"] == "cpu-1t-fast"
    assert table.model_fingerprint == model_fingerprint(load_model(ee_path))
    env = table.environment
    assert env["providers_used"] == ["CPUExecutionProvider"]
    assert env["onnxruntime"] == ort.__version__
    assert env["session_options"]["intra_op_num_threads"] == 1
    assert env["cpu_model"]
    assert "run_with_iobinding" in env["timed_call"]  # batch 1 on the CPU, like the runtime
    shapes = table.extra["shapes"]
    assert shapes["segment0"] == {"inputs": [[1, 1, 8, 8]], "outputs": [[1, 4, 8, 8]]}
    assert shapes["head1"] == {"inputs": [[1, 4, 8, 8]], "outputs": [[1], [1], [1, 3]]}
    assert shapes["monolithic"] == {"inputs": [[1, 1, 8, 8]], "outputs": [[1, 3]]}
    assert set(table.extra["timing"]["pieces"]) == {
        "segment0", "segment1", "segment2", "head0", "head1", "boundary0", "boundary1", "monolithic", "overhead"}
    assert all(c >= 0 for c in table.segment_costs("p50") + table.head_costs("mean") + table.cut_costs())
    assert [b.name for b in table.boundaries] == ["boundary0", "boundary1"]
    assert shapes["boundary1"] == {"inputs": [[1, 4, 8, 8]], "outputs": [[1], [1], [1, 3]]}  # segments 1 and 2
    assert all(0 <= e <= c for e, c in zip(table.entry_costs(), table.cut_costs(), strict=True))
    runtime = table.extra["runtime"]  # the runtime's own work per predict, timed in its own rounds
    assert runtime["per_predict_ms"] == max(runtime["predict"]["mean_ms"] - runtime["stage"]["mean_ms"], 0.0)
    assert runtime["predict"]["n"] == runtime["stage"]["n"] >= FAST_TIMING["min_runs"]


def test_runtime_entry_predicts_what_its_bare_stage_computes():
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    entry = RuntimeEntryCalls(load_preset("cpu-1t"), x, "img")
    pred = entry.model.predict(x)
    entry.stage()
    assert pred.classes[0] == entry.stage.buffers[CLASS_OUTPUT][0] == x.reshape(-1).argmax()
    assert pred.confidences[0] == entry.stage.buffers[CONFIDENCE_OUTPUT][0]
    np.testing.assert_allclose(entry.stage.buffers[PROBS_OUTPUT].sum(), 1.0, rtol=1e-5)


def test_table_round_trips_and_prints(table, tmp_path):
    path = tmp_path / "latency.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    assert json.loads(path.read_text())["kind"] == "hapi-onnx latency table"
    text = "\n".join(table_lines(table))
    for name in ["segment0", "head0", "segment1", "head1", "segment2", "overhead", "monolithic"]:
        assert name in text
    assert "1x1x8x8 -> 1x4x8x8" in text
    cuts = table.cut_costs("mean")
    assert table.boundaries and f"{1e3 * sum(cuts) / len(cuts):.1f} us mean per cut" in text


def test_batch_size_reaches_every_piece(ee_path, fast_preset):
    table = profile_model(build_ee_model(num_exits=1), fast_preset, batch_size=3)
    assert table.batch_size == 3
    assert table.extra["shapes"]["segment0"]["inputs"] == [[3, 1, 8, 8]]
    assert table.extra["shapes"]["head0"]["outputs"] == [[3], [3], [3, 3]]
    assert table.extra["shapes"]["overhead"]["inputs"] == [[3, 1]]
    assert table.environment["timed_call"].startswith("InferenceSession.run(")
    assert table.extra["runtime"] is None  # the runtime's batch-1 path is not what runs at batch 3


def test_bound_call_computes_what_session_run_computes(ee_path):
    seg = split_at_exits(load_model(ee_path)).segments[1]
    session = load_preset("cpu-1t").create_session(seg.model.SerializeToString())
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    expected = session.run(seg.outputs, {seg.inputs[0]: x})[0]
    call = BoundCall(session, {seg.inputs[0]: x}, {seg.outputs[0]: np.zeros_like(expected)})
    call()
    np.testing.assert_array_equal(call.buffers[seg.outputs[0]], expected)


def test_user_errors(ee_path, fast_preset):
    plain = build_ee_model()
    del plain.metadata_props[:]
    with pytest.raises(HapiError, match="no early exits"):
        profile_model(plain, fast_preset)
    with pytest.raises(HapiError, match="batch_size"):
        profile_model(ee_path, fast_preset, batch_size=0)
    with pytest.raises(HapiError, match="time_budget_s"):
        profile_model(ee_path, fast_preset, time_budget_s=-1)
    with pytest.raises(HapiError, match="Unknown device"):
        profile_model(ee_path, "npu")


def test_cli_writes_the_table_and_prints_it(run_cli, ee_path, fast_preset, tmp_path):
    out = tmp_path / "lat.json"
    result = run_cli("--verbose", "profile", ee_path, "--device", fast_preset, "-o", out, "--time-budget", "0.02")
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    assert table.preset["timing"]["time_budget_s"] == 0.02
    assert "segment2" in result.stdout and "monolithic" in result.stdout
    assert "[8/8]" in result.stderr and "[1/1] monolithic" in result.stderr  # pieces, the full model
    assert "[2/2] runtime" in result.stderr  # then the runtime
    assert "runtime stage" in result.stderr and "runtime predict" in result.stderr


@pytest.mark.parametrize("case", ["unknown-device", "missing-provider", "not-early-exit"])
def test_cli_user_errors_exit_2_without_output(run_cli, ee_path, fast_preset, tmp_path, case):
    out = tmp_path / "lat.json"
    model, device, expect = ee_path, str(fast_preset), ""
    if case == "unknown-device":
        device, expect = "gpu", "cpu-1t"
    elif case == "missing-provider":
        missing = [p for p in ("CUDAExecutionProvider", "OpenVINOExecutionProvider")
                   if p not in ort.get_available_providers()]
        if not missing:
            pytest.skip("both CUDA and OpenVINO providers are installed here")
        device = "cuda" if missing[0] == "CUDAExecutionProvider" else "openvino"
        expect = "onnxruntime-gpu" if device == "cuda" else "onnxruntime-openvino"
    else:
        plain = build_ee_model()
        del plain.metadata_props[:]
        model = tmp_path / "plain.onnx"
        onnx.save(plain, str(model))
        expect = "no early exits"
    result = run_cli("profile", model, "--device", device, "-o", out)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and expect in result.stderr
    assert not out.exists()


EDGE_SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {"scipy", "onnx_graphsurgeon", "torch", "matplotlib", "PIL"}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name} (the profiler must not need it)")
            return None

    sys.meta_path.insert(0, Block())
    import hapi_onnx.profile
    from hapi_onnx.profile import LatencyTable, profile_model
    from hapi_onnx_cli import profile_cmd
    from hapi_onnx_cli.main import cli

    table = profile_model(sys.argv[1], sys.argv[2])
    try:
        cli(["profile", sys.argv[1], "--device", sys.argv[2], "-o", sys.argv[3]], standalone_mode=False)
    except SystemExit as stop:
        assert stop.code in (0, None), stop.code
    assert LatencyTable.load(sys.argv[3]).exit_names == table.exit_names
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"loaded": loaded, "segments": len(table.segments)}))
    """
)


def test_profiler_runs_without_scipy_or_graphsurgeon(ee_path, fast_preset, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", EDGE_SCRIPT, str(ee_path), str(fast_preset), str(tmp_path / "lat.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "segments": 3}


def test_fused_pairs_compute_what_two_segments_compute(ee_path):
    from hapi_onnx.exits.cut import fused_pairs

    model = load_model(ee_path)
    pieces = split_at_exits(model)
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8)).astype(np.float32)
    value = {"x": x}
    for k, (pair, first, second) in enumerate(zip(fused_pairs(pieces), pieces.segments, pieces.segments[1:],
                                                  strict=False)):
        assert pair.name == f"boundary{k}" and pair.inputs == first.inputs and pair.outputs == second.outputs
        middle = _run_named(first.model, value[first.inputs[0]])
        chained = _run_named(second.model, middle[first.outputs[0]])
        fused = _run_named(pair.model, value[first.inputs[0]])
        for name in second.outputs:
            np.testing.assert_allclose(fused[name], chained[name], rtol=1e-5, atol=1e-6)
        value = middle
