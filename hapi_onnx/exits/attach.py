"""Fit exit heads on the frozen backbone and graft them in: backbone -> over-provisioned EE model.

Build time only: this module imports onnx-graphsurgeon, so nothing that runs on the device
(``hapi_onnx.exits.layout``, the runtime) may import it.
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from hapi_onnx.data import DataSource, open_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.features import Progress, check_labelled, collect_features, image_input
from hapi_onnx.exits.from_outputs import exits_from_outputs
from hapi_onnx.exits.heads import LinearHead, fit_head
from hapi_onnx.exits.input_record import InputRecord
from hapi_onnx.exits.layout import METADATA_KEY, ExitLayout, ExitSpec
from hapi_onnx.exits.pooling import fold_gap_into_quadrants, pooled_features, quadrant_features, resolve_pooling
from hapi_onnx.graph import (
    candidate_exits,
    is_probability_output,
    load_model,
    model_fingerprint,
    prune_to,
    validate_exit_tensors,
)
from hapi_onnx.graph.load import save_model
from hapi_onnx.graph.quant import Dequantizer, dequantizer, quantization_format
from hapi_onnx.runtime.preprocess import Preprocessing


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
        pooling (str): The pooling its features came from (``gap`` or ``gap+2x2``).
        solver (str): ``exact`` or ``whitened`` (see :mod:`~hapi_onnx.exits.heads`).
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
    pooling: str
    solver: str


@dataclass(frozen=True)
class AttachResult:
    """The over-provisioned model and how its heads were fitted.

    Attributes:
        model (onnx.ModelProto): The EE model: the original outputs first, then one probability
            output per exit in graph order; its :class:`ExitLayout` in the metadata.
        layout (ExitLayout): The layout stored in ``model``.
        heads (list[HeadReport]): One report per exit, in order.
        feature_seconds (float): Time to collect the pooled features (one ORT pass).
        num_samples (int): Training samples the heads were fitted on (0 when none were fitted).
        input_record (InputRecord): The preprocessing and class names stored in ``model``.
    """

    model: onnx.ModelProto
    layout: ExitLayout
    heads: list[HeadReport]
    feature_seconds: float
    num_samples: int = 0
    input_record: InputRecord = InputRecord()

    def save(self, path: str | os.PathLike) -> None:
        """Write the EE model to ``path`` atomically."""
        save_model(self.model, path)


def final_output(model: onnx.ModelProto, name: str | None = None) -> tuple[str, bool, int]:
    """Name, whether it is already softmax probabilities, and class count of the classifier output.

    Args:
        model (onnx.ModelProto): The backbone.
        name (str | None): The classifier output. Defaults to None: the model's first output.

    Returns:
        tuple[str, bool, int]: The output name, whether it holds probabilities (see
        :func:`~hapi_onnx.graph.is_probability_output`) and the class count K.

    Raises:
        HapiError: when the model has no such output or it is not ``[N, K]`` with a static K >= 2.
    """
    return classifier_output(model, _first_output(model) if name is None else name)


def _first_output(model: onnx.ModelProto) -> str:
    if not model.graph.output:
        raise HapiError("The model has no outputs; expected a classifier with an [N, classes] output.")
    return model.graph.output[0].name


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
    return name, is_probability_output(model, name), dims[1].dim_value


def check_label_coverage(train: DataSource, num_classes: int) -> None:
    """Refuse training labels that leave some of the model's classes without a sample.

    A head is fitted on the training labels only: a class with no sample gets no weight to
    learn from, and with a single class there is nothing to tell apart.

    Raises:
        HapiError: when fewer than 2 classes, or not all ``num_classes`` classes, have a sample.
    """
    present = np.unique(np.asarray(train.y))
    names = train.classes

    def label(k) -> str:
        return f"{int(k)} ({names[int(k)]!r})" if names is not None else str(int(k))

    if len(present) < 2:
        raise HapiError(
            f"The training data has samples of {len(present)} class(es) ({', '.join(map(label, present))}) "
            f"but exit heads need at least 2 to learn from; the model has {num_classes}. Pass a training "
            "set with samples of every class."
        )
    missing = sorted(set(range(num_classes)) - {int(k) for k in present})
    if missing:
        shown = ", ".join(map(label, missing[:20])) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise HapiError(
            f"The training data has no sample of class(es) {shown}; the model has {num_classes} classes and "
            "a head cannot learn a class it never sees. Add samples of those classes to the training set "
            "(e.g. use the whole training split, not a slice of it)."
        )


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
    dequantize: Dequantizer | None = None,
) -> onnx.ModelProto:
    """A standalone head graph: cut tensor -> pooling -> Flatten -> Gemm -> Softmax -> ``output``.

    A head on an int8/uint8 cut starts with the ``DequantizeLinear`` its backbone applies to that
    tensor (same scale and zero point) and stays float from there.

    Args:
        tensor (str): The cut tensor (the head graph's input, same name).
        shape (Sequence): Its shape.
        pooling (str): The pooling the head was fitted on (``auto`` resolved for ``shape``).
        head (LinearHead): Weights with standardisation and temperature folded in.
        prefix (str): Prefix of the head's node, weight and intermediate tensor names.
        output (str): Name of the probability output ``[N, K]``.
        opset_imports (Sequence[onnx.OperatorSetIdProto]): The backbone's opsets.
        dequantize (Dequantizer | None): How the backbone reads an 8-bit ``tensor`` as float.
            Defaults to None: ``tensor`` is float.

    Returns:
        onnx.ModelProto: The head as its own model.
    """
    pooling = resolve_pooling(pooling, shape)
    entry, constants, source = ([], [], tensor) if dequantize is None else dequantize.nodes(prefix)
    pooled = pooled_features(source, shape, pooling, prefix)
    if head.weight.shape[0] != pooled.dim:
        raise ValueError(f"head expects {head.weight.shape[0]} features, pooling gives {pooled.dim}")
    weights = head.weight
    quadrants = quadrant_features(source, shape, prefix) if pooling == "gap+2x2" else None
    if quadrants is not None:  # same logits with three fewer kernels per head call
        pooled, weights = quadrants, fold_gap_into_quadrants(head.weight, shape[1])
    weight, bias, logits = f"{prefix}weight", f"{prefix}bias", f"{prefix}logits"
    nodes = entry + list(pooled.nodes) + [
        helper.make_node("Gemm", [pooled.output, weight, bias], [logits], name=f"{prefix}gemm"),
        helper.make_node("Softmax", [logits], [output], axis=1, name=f"{prefix}softmax"),
    ]
    elem = onnx.TensorProto.FLOAT if dequantize is None else dequantize.elem_type
    graph = helper.make_graph(
        nodes,
        f"{prefix}head",
        [helper.make_tensor_value_info(tensor, elem, list(shape))],
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, [shape[0], head.weight.shape[1]])],
        initializer=[*constants, numpy_helper.from_array(weights, weight), numpy_helper.from_array(head.bias, bias)],
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
    source = onnx.ModelProto()
    source.CopyFrom(model)  # GS import rewrites Constant nodes' tensors in place (it names them)
    graph = gs.import_onnx(source)
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
            raise HapiError("Give either --exits or --max-candidates, not both: --max-candidates only thins the "
                            f"automatic choice. Got both: {list(exits)!r} and {max_candidates!r}.")
        chosen = validate_exit_tensors(model, list(exits))
    if not chosen:
        raise HapiError(
            "No exits to attach: the model has no candidate exit (no single-tensor cut before its "
            "classifier), or exits was empty."
        )
    return sorted(chosen, key=lambda c: c.index)


def _fit_heads(model: onnx.ModelProto, train: DataSource, candidates: list, features, num_classes: int, pooling: str,
               solver: str, head_progress: Progress | None) -> tuple[list[ExitSpec], list, list["HeadReport"]]:
    """Fit one head per candidate on its features: the exits' specs, head graphs and reports."""
    taken = _all_names(model)
    specs, head_models, reports = [], [], []
    if head_progress is not None:
        head_progress(0, len(candidates))
    for k, candidate in enumerate(candidates):
        feats = features[k]
        fit = fit_head(feats, train.y, num_classes, solver=solver)
        del feats
        name = f"exit{k}"
        output = _unique(f"{name}_prob", taken)
        prefix = _unique(f"hapi_{name}", taken) + "/"
        head_models.append(head_model(candidate.tensor, list(candidate.shape), pooling, fit.head, prefix,
                                      output, model.opset_import, dequantizer(model, candidate.tensor)))
        specs.append(ExitSpec(name=name, tensor=candidate.tensor, output=output))
        reports.append(HeadReport(
            name=name, tensor=candidate.tensor, shape=list(candidate.shape),
            mac_fraction=float(candidate.fraction), feature_dim=features.dims[k],
            train_accuracy=fit.train_accuracy, heldout_accuracy=fit.heldout_accuracy,
            temperature=fit.temperature, l2=fit.l2, fit_seconds=fit.seconds,
            pooling=resolve_pooling(pooling, list(candidate.shape)), solver=fit.solver,
        ))
        if head_progress is not None:
            head_progress(k + 1, len(candidates))
    return specs, head_models, reports


def attach_exits(
    model: str | os.PathLike | onnx.ModelProto,
    train: DataSource,
    exits: Sequence[str] | None = None,
    pooling: str = "auto",
    max_candidates: int | None = None,
    progress: Progress | None = None,
    batch_size: int | None = None,
    final_output: str | None = None,
    head_progress: Progress | None = None,
    solver: str = "auto",
) -> AttachResult:
    """Fit a softmax head at each chosen cut of the frozen backbone and graft them all in.

    Features are collected in one ORT pass over the data, streamed in batches
    (:func:`~hapi_onnx.exits.features.collect_features`; kept on disk as float16 when large),
    each head is fitted independently (:func:`~hapi_onnx.exits.heads.fit_head`) and grafted as
    pooling -> Flatten -> Gemm -> Softmax with the temperature folded in. The data's
    preprocessing spec and class names are stored in the EE model
    (:class:`~hapi_onnx.exits.input_record.InputRecord`) for ``calibrate`` and ``bundle``.

    Args:
        model (str | PathLike | onnx.ModelProto): The backbone, as a path or a model (not
            modified).
        train (DataSource): Labelled training data with a sample of every class (a held-out part
            of it picks the regularisation and the temperature).
        exits (Sequence[str] | None): Cut tensors to put heads on (any rank-4 single-tensor cut,
            see :func:`~hapi_onnx.graph.validate_exit_tensors`). Defaults to None: every candidate
            exit (at most ``max_candidates``).
        pooling (str): ``auto``, ``gap`` or ``gap+2x2`` (see
            :func:`~hapi_onnx.exits.pooling.resolve_pooling`). Defaults to "auto": GAP plus a 2x2
            grid (far more accurate early exits for a few µs) on cuts of up to 409 channels, GAP on
            wider ones.
        max_candidates (int | None): Cap on the number of candidates when ``exits`` is None.
        progress (Progress | None): ``progress(done, total)`` samples during feature collection.
        batch_size (int | None): Samples per ORT run. Defaults to None: see
            :func:`~hapi_onnx.exits.features.run_batch_size`.
        final_output (str | None): The classifier output ``[N, classes]``. Defaults to None: the
            model's first output. Exits are cuts of the path to this output.
        head_progress (Progress | None): ``head_progress(done, total)`` heads, after each head.
        solver (str): Head solver, ``auto``, ``exact`` or ``whitened`` (see
            :mod:`~hapi_onnx.exits.heads`). Defaults to "auto".

    Returns:
        AttachResult: The EE model (a new model, normalised by :func:`~hapi_onnx.graph.load_model`
        so its fingerprint is stable) with its layout and the per-head report.

    Raises:
        HapiError: when the data does not fit the model or misses some of its classes, an exit is
            not a candidate, or the model already has exits.
    """
    model = load_model(model)
    _refuse_ee_model(model)
    name = _first_output(model) if final_output is None else final_output
    final, final_is_probability, num_classes = classifier_output(model, name)
    train = check_labelled(model, train, num_classes, "training data")
    classifier = model
    if len(model.graph.output) > 1:  # cuts of the classifier's path, whatever the other outputs read
        classifier = prune_to(model, [final])
    candidates = _chosen_candidates(classifier, exits, max_candidates)
    check_label_coverage(train, num_classes)
    cuts = [(c.tensor, list(c.shape)) for c in candidates]

    start = time.perf_counter()
    features = collect_features(model, train, cuts, pooling, batch_size, progress)
    feature_seconds = time.perf_counter() - start

    with features:
        specs, head_models, reports = _fit_heads(model, train, candidates, features, num_classes, pooling, solver,
                                                 head_progress)
    grafted = graft_heads(model, head_models)
    layout = ExitLayout(
        input=image_input(model).name,
        final_output=final,
        final_is_probability=final_is_probability,
        num_classes=num_classes,
        exits=specs,
        source_fingerprint=model_fingerprint(model),
        quantization=quantization_format(model),
    )
    layout.to_model(grafted)
    record = InputRecord(preprocessing=train.preprocessing, classes=train.classes)
    record.to_model(grafted)
    ee = load_model(grafted)  # normalised, so the saved file's fingerprint is what later steps compute
    return AttachResult(model=ee, layout=layout, heads=reports, feature_seconds=feature_seconds,
                        num_samples=len(train), input_record=record)


def attach(
    model: str | os.PathLike | onnx.ModelProto,
    data: DataSource | str | os.PathLike | None = None,
    from_outputs: bool = False,
    final_output: str | None = None,
    exits: Sequence[str] | None = None,
    pooling: str = "auto",
    max_candidates: int | None = None,
    progress: Progress | None = None,
    batch_size: int | None = None,
    preprocessing: "Preprocessing | str | dict | None" = None,
    head_progress: Progress | None = None,
) -> AttachResult:
    """Make the over-provisioned EE model: fit heads on the backbone, or adopt its own exit outputs.

    The one entry point behind ``hapi-onnx attach``. With ``from_outputs`` the model's extra
    outputs are taken as ready-made exits (:func:`~hapi_onnx.exits.from_outputs.exits_from_outputs`)
    and nothing is fitted; otherwise heads are fitted on ``data`` (:func:`attach_exits`).

    Args:
        model (str | PathLike | onnx.ModelProto): The backbone or multi-exit model (not modified).
        data (DataSource | str | PathLike | None): Labelled training data, or the path of an
            ``.npz`` or an image folder (see :func:`~hapi_onnx.data.open_dataset`). Required to fit
            heads; must be None with ``from_outputs``.
        from_outputs (bool): Adopt the model's extra outputs as exits. Defaults to False.
        final_output (str | None): The final classifier output. Defaults to None: the first output
            when fitting heads, the last one with ``from_outputs``.
        exits (Sequence[str] | None): Cut tensors to fit heads at (see :func:`attach_exits`).
        pooling (str): Head features, ``auto``, ``gap`` or ``gap+2x2``. Defaults to "auto".
        max_candidates (int | None): Cap on automatic candidates. Defaults to None.
        progress (Progress | None): ``progress(done, total)`` samples during feature collection.
        batch_size (int | None): Samples per ORT run. Defaults to None (automatic).
        preprocessing (Preprocessing | str | dict | None): How ``data``'s pixels become model
            input (a preset name, a spec dict or a spec), when ``data`` is a path. Defaults to None
            (preset ``none`` for an image folder).
        head_progress (Progress | None): ``head_progress(done, total)`` heads, after each head.

    Returns:
        AttachResult: The EE model and its layout; ``heads`` is empty and ``feature_seconds`` 0
        with ``from_outputs``.

    Raises:
        HapiError: for an invalid combination of options, or anything :func:`attach_exits` or
            :func:`~hapi_onnx.exits.from_outputs.exits_from_outputs` refuses.
    """
    if from_outputs:
        given = [flag for flag, value in (("data", data), ("exits", exits), ("max_candidates", max_candidates),
                                          ("preprocessing", preprocessing))
                 if value is not None]
        if given:
            raise HapiError(
                f"Taking exits from the model's outputs fits nothing, so it takes no {', '.join(given)}. "
                "Drop them (--data, --exits, --max-candidates, --preprocess), or drop --exits-from-outputs "
                "to fit heads."
            )
        ee = exits_from_outputs(model, final_output=final_output)
        return AttachResult(model=ee, layout=ExitLayout.from_model(ee), heads=[], feature_seconds=0.0)
    if data is None:
        raise HapiError(
            "attach needs labelled training data to fit the heads (--data TRAIN.npz with x and y, or a "
            "folder with one subfolder of images per class), or --exits-from-outputs for a model that "
            "already has one output per exit."
        )
    train = open_dataset(data, preprocessing)
    return attach_exits(model, train, exits=exits, pooling=pooling, max_candidates=max_candidates,
                        progress=progress, batch_size=batch_size, final_output=final_output,
                        head_progress=head_progress)
