"""Fit exit heads on the frozen backbone and graft them in: backbone -> over-provisioned EE model.

Build time only: this module imports onnx-graphsurgeon, so nothing that runs on the device
(``hapi_onnx.exits.layout``, the runtime) may import it.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from hapi_onnx.data import Dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.features import Progress, check_labelled, collect_features, image_input
from hapi_onnx.exits.heads import LinearHead, fit_head
from hapi_onnx.exits.layout import METADATA_KEY, ExitLayout, ExitSpec
from hapi_onnx.exits.pooling import pooled_features
from hapi_onnx.files import atomic_output
from hapi_onnx.graph import candidate_exits, load_model, model_fingerprint, validate_exit_tensors


@dataclass(frozen=True)
class HeadReport:
    """How one head was fitted.

    Attributes:
        name (str): Exit name (``exit<k>``).
        tensor (str): The cut tensor it reads.
        shape (list): Shape of that tensor.
        mac_fraction (float): Share of the backbone's MACs spent before the cut.
        feature_dim (int): Pooled features the head reads.
        train_accuracy (float): Accuracy on the part of the training data it was fitted on.
        heldout_accuracy (float): Accuracy on the held-out part of the training data.
        temperature (float): Softmax temperature (folded into the head).
        l2 (float): Chosen L2 strength.
        fit_seconds (float): Time to fit it (L2 grid and temperature included).
    """

    name: str
    tensor: str
    shape: list
    mac_fraction: float
    feature_dim: int
    train_accuracy: float
    heldout_accuracy: float
    temperature: float
    l2: float
    fit_seconds: float


@dataclass(frozen=True)
class AttachResult:
    """The over-provisioned model and how its heads were fitted.

    Attributes:
        model (onnx.ModelProto): The EE model: the original outputs first, then one probability
            output per exit in graph order; its :class:`ExitLayout` in the metadata.
        layout (ExitLayout): The layout stored in ``model``.
        heads (list[HeadReport]): One report per exit, in order.
        feature_seconds (float): Time to collect the pooled features (one ORT pass).
    """

    model: onnx.ModelProto
    layout: ExitLayout
    heads: list[HeadReport]
    feature_seconds: float

    def save(self, path: str | os.PathLike) -> None:
        """Write the EE model to ``path`` atomically."""
        save_model(self.model, path)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write an ONNX model atomically (a temporary file renamed into place)."""
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))


def final_output(model: onnx.ModelProto) -> tuple[str, bool, int]:
    """Name, whether it is already softmax probabilities, and class count of the classifier output.

    The classifier is the model's first output, a ``[N, K]`` tensor with static K.

    Raises:
        HapiError: when the model has no output or its first output is not ``[N, K]``.
    """
    if not model.graph.output:
        raise HapiError("The model has no outputs; expected a classifier with an [N, classes] output.")
    return classifier_output(model, model.graph.output[0].name)


def classifier_output(model: onnx.ModelProto, name: str) -> tuple[str, bool, int]:
    """Like :func:`final_output` for the graph output called ``name``."""
    outputs = {o.name: o for o in model.graph.output}
    if name not in outputs:
        raise HapiError(f"The model has no output {name!r}. Its outputs are {list(outputs)}.")
    dims = outputs[name].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value") or dims[1].dim_value < 2:
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        raise HapiError(
            f"Classifier output {name!r} must be [N, classes] with a static class count >= 2. "
            f"Got shape {shape} instead."
        )
    producer = next((n for n in model.graph.node if name in n.output), None)
    return name, producer is not None and producer.op_type == "Softmax", dims[1].dim_value


def _refuse_ee_model(model: onnx.ModelProto) -> None:
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        raise HapiError(
            "This model already carries early exits (it is an attach output). "
            "Attach heads to the original backbone instead."
        )


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _all_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer} | {vi.name for vi in graph.value_info}
    for node in graph.node:
        names.update(node.output)
        names.add(node.name)
    return names


def head_model(
    tensor: str,
    shape: Sequence,
    pooling: str,
    head: LinearHead,
    prefix: str,
    output: str,
    opset_imports: Sequence[onnx.OperatorSetIdProto],
) -> onnx.ModelProto:
    """A standalone head graph: cut tensor -> pooling -> Flatten -> Gemm -> Softmax -> ``output``.

    Args:
        tensor (str): The cut tensor (the head graph's input, same name).
        shape (Sequence): Its shape.
        pooling (str): The pooling the head was fitted on.
        head (LinearHead): Weights with standardisation and temperature folded in.
        prefix (str): Prefix of the head's node, weight and intermediate tensor names.
        output (str): Name of the probability output ``[N, K]``.
        opset_imports (Sequence[onnx.OperatorSetIdProto]): The backbone's opsets.

    Returns:
        onnx.ModelProto: The head as its own model.
    """
    pooled = pooled_features(tensor, shape, pooling, prefix)
    if head.weight.shape[0] != pooled.dim:
        raise ValueError(f"head expects {head.weight.shape[0]} features, pooling gives {pooled.dim}")
    weight, bias, logits = f"{prefix}weight", f"{prefix}bias", f"{prefix}logits"
    nodes = list(pooled.nodes) + [
        helper.make_node("Gemm", [pooled.output, weight, bias], [logits], name=f"{prefix}gemm"),
        helper.make_node("Softmax", [logits], [output], axis=1, name=f"{prefix}softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        f"{prefix}head",
        [helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, [shape[0], head.weight.shape[1]])],
        initializer=[numpy_helper.from_array(head.weight, weight), numpy_helper.from_array(head.bias, bias)],
    )
    return helper.make_model(graph, opset_imports=list(opset_imports))


def graft_heads(model: onnx.ModelProto, heads: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """A new model: ``model`` with each head graph grafted at the tensor its input is named after.

    The original outputs stay first and unchanged; each head's output is appended, in order.
    Model-level metadata (producer, doc string, metadata_props) is carried over.

    Args:
        model (onnx.ModelProto): The backbone (not modified).
        heads (Sequence[onnx.ModelProto]): Head graphs from :func:`head_model`.

    Returns:
        onnx.ModelProto: The grafted model.
    """
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    for head in heads:
        head_graph = gs.import_onnx(head)
        head_input = head_graph.inputs[0]
        cut = tensors[head_input.name]
        for node in head_graph.nodes:
            for i, tensor in enumerate(node.inputs):
                if tensor is head_input:
                    node.inputs[i] = cut
            graph.nodes.append(node)
        graph.outputs.extend(head_graph.outputs)
    grafted = gs.export_onnx(graph)
    grafted.ir_version = model.ir_version
    grafted.producer_name, grafted.producer_version = model.producer_name, model.producer_version
    grafted.doc_string, grafted.model_version = model.doc_string, model.model_version
    del grafted.metadata_props[:]
    grafted.metadata_props.extend(model.metadata_props)
    return grafted


def _chosen_candidates(model: onnx.ModelProto, exits: Sequence[str] | None, max_candidates: int | None):
    if exits is None:
        chosen = candidate_exits(model, max_candidates=max_candidates)
    else:
        if max_candidates is not None:
            raise HapiError("Give either exits or max_candidates, not both: max_candidates only caps the "
                            "automatic choice.")
        chosen = validate_exit_tensors(model, list(exits))
    if not chosen:
        raise HapiError(
            "No exits to attach: the model has no candidate exit (no single-tensor cut before its "
            "classifier), or exits was empty."
        )
    return sorted(chosen, key=lambda c: c.index)


def attach_exits(
    model: str | os.PathLike | onnx.ModelProto,
    train: Dataset,
    exits: Sequence[str] | None = None,
    pooling: str = "gap+2x2",
    max_candidates: int | None = None,
    progress: Progress | None = None,
    batch_size: int = 256,
) -> AttachResult:
    """Fit a softmax head at each chosen cut of the frozen backbone and graft them all in.

    Features are collected in one ORT pass (:func:`~hapi_onnx.exits.features.collect_features`),
    each head is fitted independently (:func:`~hapi_onnx.exits.heads.fit_head`) and grafted as
    pooling -> Flatten -> Gemm -> Softmax with the temperature folded in.

    Args:
        model (str | PathLike | onnx.ModelProto): The backbone, as a path or a model (not
            modified); its first output is the classifier.
        train (Dataset): Labelled training data (a held-out part of it picks L2 and temperature).
        exits (Sequence[str] | None): Cut tensors to put heads on (any rank-4 single-tensor cut,
            see :func:`~hapi_onnx.graph.validate_exit_tensors`). Defaults to None: every candidate
            exit (at most ``max_candidates``).
        pooling (str): ``gap`` or ``gap+2x2``. Defaults to "gap+2x2" (GAP plus a 2x2 grid: far more accurate early exits for a few µs).
        max_candidates (int | None): Cap on the number of candidates when ``exits`` is None.
        progress (Progress | None): ``progress(done, total)`` during feature collection.
        batch_size (int): Samples per ORT run. Defaults to 256.

    Returns:
        AttachResult: The EE model (a new model, normalised by :func:`~hapi_onnx.graph.load_model`
        so its fingerprint is stable) with its layout and the per-head report.

    Raises:
        HapiError: when the data does not fit the model, an exit is not a candidate, or the model
            already has exits.
    """
    model = load_model(model)
    _refuse_ee_model(model)
    final, final_is_probability, num_classes = final_output(model)
    check_labelled(model, train, num_classes, "training data")
    candidates = _chosen_candidates(model, exits, max_candidates)
    cuts = [(c.tensor, list(c.shape)) for c in candidates]

    start = time.perf_counter()
    features = collect_features(model, train.x, cuts, pooling, batch_size, progress)
    feature_seconds = time.perf_counter() - start

    taken = _all_names(model)
    specs, head_models, reports = [], [], []
    for k, (candidate, feats) in enumerate(zip(candidates, features, strict=True)):
        fit = fit_head(feats, train.y, num_classes)
        name = f"exit{k}"
        output = _unique(f"{name}_prob", taken)
        prefix = _unique(f"hapi_{name}", taken) + "/"
        head_models.append(head_model(candidate.tensor, list(candidate.shape), pooling, fit.head, prefix,
                                      output, model.opset_import))
        specs.append(ExitSpec(name=name, tensor=candidate.tensor, output=output))
        reports.append(HeadReport(
            name=name, tensor=candidate.tensor, shape=list(candidate.shape),
            mac_fraction=float(candidate.fraction), feature_dim=int(feats.shape[1]),
            train_accuracy=fit.train_accuracy, heldout_accuracy=fit.heldout_accuracy,
            temperature=fit.temperature, l2=fit.l2, fit_seconds=fit.seconds,
        ))

    grafted = graft_heads(model, head_models)
    layout = ExitLayout(
        input=image_input(model).name,
        final_output=final,
        final_is_probability=final_is_probability,
        num_classes=num_classes,
        exits=specs,
        source_fingerprint=model_fingerprint(model),
    )
    layout.to_model(grafted)
    ee = load_model(grafted)  # normalised, so the saved file's fingerprint is what later steps compute
    return AttachResult(model=ee, layout=layout, heads=reports, feature_seconds=feature_seconds)

