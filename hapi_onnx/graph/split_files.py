"""Write a model's segments to a directory (``segment_00.onnx``, ... + ``index.json``), atomically."""

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from hapi_onnx.artifact import JsonArtifact
from hapi_onnx.files import atomic_output, sha256_file
from hapi_onnx.graph.cuts import candidate_exits, validate_exit_tensors
from hapi_onnx.graph.load import input_spec, load_model, model_fingerprint
from hapi_onnx.graph.segment import split_model

INDEX_FILE = "index.json"


@dataclass(frozen=True)
class SegmentEntry:
    """One segment file of a split.

    Attributes:
        file (str): File name inside the split directory.
        inputs (list[str]): Its graph inputs (the previous segment's outputs).
        outputs (list[str]): Its graph outputs.
        sha256 (str): Hash of the file.
    """

    file: str
    inputs: list[str]
    outputs: list[str]
    sha256: str


@dataclass(frozen=True)
class SplitIndex(JsonArtifact):
    """The ``index.json`` of a split directory: which file runs after which.

    Attributes:
        source_fingerprint (str): :func:`model_fingerprint` of the normalised model split.
        input (str): The model's image input.
        cuts (list[str]): The tensors split at, in graph order.
        segments (list[SegmentEntry]): ``len(cuts) + 1`` segments; run them in order.
    """

    KIND = "hapi-onnx split index"
    FORMAT_VERSION = 1

    source_fingerprint: str
    input: str
    cuts: list[str]
    segments: list[SegmentEntry]

    @classmethod
    def from_dict(cls, data: dict) -> "SplitIndex":
        return cls(**{**data, "segments": [SegmentEntry(**entry) for entry in data["segments"]]})


def write_split(
    source: str | os.PathLike | onnx.ModelProto, directory: str | os.PathLike, at: list[str] | None = None
) -> SplitIndex:
    """Split a model at cut tensors and write the segments plus ``index.json`` into ``directory``.

    The directory appears only once complete; on any error nothing is left behind. An existing
    split directory is replaced; any other existing path is refused.

    Args:
        source (str | PathLike | onnx.ModelProto): The model (loaded with :func:`load_model`).
        directory (PathLike): The split directory to create.
        at (list[str]): Tensors to split at (rank-4 float cut points, any order). Defaults to None:
            every candidate exit (:func:`candidate_exits`).

    Returns:
        SplitIndex: What was written.

    Raises:
        HapiError: when the model cannot be loaded, a tensor in ``at`` is not a usable cut point,
            or ``directory`` exists and is not a split directory.
    """
    directory = Path(directory)
    model = load_model(source)
    if at is None:
        cuts = [c.tensor for c in candidate_exits(model)]
    else:
        cuts = [c.tensor for c in validate_exit_tensors(model, list(at))]
    segments = split_model(model, cuts)
    entries = []
    with atomic_output(directory, directory=True, kind="split") as tmp:
        for k, segment in enumerate(segments):
            name = f"segment_{k:02d}.onnx"
            onnx.save(segment, tmp / name)
            entries.append(SegmentEntry(
                file=name,
                inputs=[i.name for i in segment.graph.input],
                outputs=[o.name for o in segment.graph.output],
                sha256=sha256_file(tmp / name),
            ))
        index = SplitIndex(model_fingerprint(model), input_spec(model).name, cuts, entries)
        index.save(tmp / INDEX_FILE)
    return index
