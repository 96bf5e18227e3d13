"""Where the exits of an over-provisioned (early-exit) ONNX model are, stored in its metadata.

``attach`` writes it; ``calibrate``, ``profile`` and ``bundle`` read it. Only ``onnx`` is needed,
so the edge-side profiler can read it too.
"""

import json
from dataclasses import asdict, dataclass

import onnx

from hapi_onnx.artifact import Kind
from hapi_onnx.errors import HapiError
from hapi_onnx.graph.load import set_metadata

METADATA_KEY = "hapi_onnx.exits"
FORMAT_VERSION = 1
LAYOUT = Kind("exit layout", FORMAT_VERSION)


@dataclass(frozen=True)
class ExitSpec:
    """One intermediate exit.

    Attributes:
        name (str): Exit name (``exit<k>``), as used in traces, tables and designs.
        tensor (str): Backbone tensor the head reads (the cut point).
        output (str): Graph output holding the head's class probabilities.
    """

    name: str
    tensor: str
    output: str


@dataclass(frozen=True)
class ExitLayout:
    """The exits of an over-provisioned model, in graph order.

    Attributes:
        input (str): The model's image input.
        final_output (str): The original classifier output (logits or probabilities).
        final_is_probability (bool): Whether ``final_output`` is already softmax probabilities.
        num_classes (int): Number of classes.
        exits (list[ExitSpec]): Intermediate exits in graph order (final classifier excluded).
        source_fingerprint (str): sha256 of the backbone model the heads were attached to.
        quantization (str | None): ``"QDQ"`` or ``"QOperator"`` for an int8 backbone: its exit
            tensors (and a bundle's carried tensors) are int8/uint8, its heads stay float32 and
            read them through the backbone's own DequantizeLinear. None for a float backbone.
    """

    input: str
    final_output: str
    final_is_probability: bool
    num_classes: int
    exits: list[ExitSpec]
    source_fingerprint: str
    quantization: str | None = None

    @property
    def precision(self) -> dict[str, str] | None:
        """What runs in int8 and what in float, for an int8 backbone (None for a float one)."""
        if self.quantization is None:
            return None
        return {
            "backbone": f"int8 ({self.quantization}); bundle stages stay int8 and carry int8/uint8 tensors",
            "heads": "float32, reading each cut through the backbone's own DequantizeLinear",
        }

    @property
    def exit_names(self) -> list[str]:
        """All exit names in order, the final classifier (``final``) last."""
        return [e.name for e in self.exits] + ["final"]

    def to_model(self, model: onnx.ModelProto) -> None:
        """Store the layout in ``model``'s metadata, in place."""
        payload = json.dumps({"format_version": FORMAT_VERSION, **asdict(self)})
        set_metadata(model, METADATA_KEY, payload)

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "ExitLayout":
        """Read the layout back from an over-provisioned model.

        Raises:
            HapiError: when the model carries no (or a malformed) exit layout.
        """
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise HapiError(
                "This ONNX model has no early exits recorded. "
                "Create one with `hapi-onnx attach MODEL --data TRAIN.npz -o EE.onnx`."
            )
        return LAYOUT.read(props[METADATA_KEY], f"the model's {METADATA_KEY!r} metadata",
                           lambda data: cls(**{**data, "exits": [ExitSpec(**e) for e in data["exits"]]}))
