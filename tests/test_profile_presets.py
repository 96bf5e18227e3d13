"""Device presets: resolution by name or path, validation messages, session options, providers."""

import json

import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.presets import (
    DevicePreset,
    available_presets,
    load_preset,
    preset_from_dict,
)

SHIPPED = ["coreml", "cpu", "cpu-1t", "cuda", "openvino", "tensorrt"]
MISSING_HERE = [
    name
    for name in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider",
                 "CoreMLExecutionProvider")
    if name not in ort.get_available_providers()
]


def _preset_dict(**changes):
    data = load_preset("cpu-1t").to_dict()
    data.update(changes)
    return data


def test_shipped_presets_are_listed_and_all_parse():
    assert available_presets() == SHIPPED
    for name in SHIPPED:
        preset = load_preset(name)
        assert isinstance(preset, DevicePreset)
        assert preset.name == name
        assert preset.source == f"builtin:{name}"
        assert preset.batch_sizes[0] == 1
        assert isinstance(preset.session_options(), ort.SessionOptions)
        assert preset_from_dict(preset.to_dict()) == preset


def test_cpu_1t_is_single_threaded_and_sequential():
    opts = load_preset("cpu-1t").session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert load_preset("cpu").session_options().intra_op_num_threads == 0


def test_gpu_presets_list_their_fallbacks():
    assert load_preset("tensorrt").provider_names == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert load_preset("cuda").provider_names[-1] == "CPUExecutionProvider"
    # ORT takes provider option values as strings; booleans as true/false.
    assert load_preset("tensorrt").provider_options[0]["trt_fp16_enable"] == "false"


def test_unknown_name_lists_the_shipped_presets():
    with pytest.raises(HapiError, match="Unknown device 'gpu'") as err:
        load_preset("gpu")
    for name in SHIPPED:
        assert name in str(err.value)


def test_path_resolves_a_custom_preset(tmp_path):
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(_preset_dict(name="edge", session={"intra_op_num_threads": 2})))
    preset = load_preset(path)
    assert preset.name == "edge"
    assert preset.source == str(path)
    assert preset.session_options().intra_op_num_threads == 2
    assert load_preset(str(path)) == preset


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threads": 1}, "unknown field"),
        ({"providers": [["CPUExecutionProvider"]]}, "each provider must be"),
        ({"providers": []}, "lists no providers"),
        ({"session": {"intra_op_num_threads": -1}}, "intra_op_num_threads"),
        ({"session": {"execution_mode": "fast"}}, "execution_mode"),
        ({"session": {"num_threads": 1}}, "unknown session option"),
        ({"batch_sizes": [0]}, "batch_sizes"),
        ({"timing": {"min_runs": 3}}, "min_runs"),
        ({"timing": {"target_rel_precision": 5}}, "target_rel_precision"),
        ({"timing": {"repeats": 3}}, "unknown timing field"),
        ({"format_version": 99}, "format_version"),
    ],
)
def test_malformed_presets_name_the_bad_field(tmp_path, changes, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_preset_dict(**changes)))
    with pytest.raises(HapiError, match=message):
        load_preset(path)


def test_invalid_json_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(HapiError, match="not valid JSON"):
        load_preset(path)


@pytest.mark.skipif(not MISSING_HERE, reason="every accelerator provider is installed here")
def test_missing_provider_names_the_package_to_install(tmp_path):
    provider = MISSING_HERE[0]
    package = {
        "CUDAExecutionProvider": "onnxruntime-gpu",
        "TensorrtExecutionProvider": "onnxruntime-gpu",
        "OpenVINOExecutionProvider": "onnxruntime-openvino",
        "CoreMLExecutionProvider": "macOS",
    }[provider]
    path = tmp_path / "accel.json"
    providers = [[provider, {}], ["CPUExecutionProvider", {}]]
    path.write_text(json.dumps(_preset_dict(name="accel", providers=providers)))
    preset = load_preset(path)
    with pytest.raises(HapiError, match=provider) as err:
        preset.check_providers()
    assert package in str(err.value)


def test_cpu_presets_create_sessions_on_the_cpu_provider():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name in ("cpu", "cpu-1t"):
        preset = load_preset(name)
        preset.check_providers()
        session = preset.create_session(model.SerializeToString())
        assert session.get_providers() == ["CPUExecutionProvider"]
