"""What the heads of an early-exit model were fitted on: the preprocessing spec and class names.

``attach`` stores it in the EE model's metadata (key ``hapi_onnx.input``), next to the exit
layout. ``calibrate`` and ``bundle`` read it, so an image folder is preprocessed the same way at
every step without repeating the spec, a split whose class names differ is refused, and the
bundle's manifest carries the spec and the class names.
"""

import json
from dataclasses import dataclass
from typing import Any

import onnx

from hapi_onnx.artifact import Kind
from hapi_onnx.errors import HapiError
from hapi_onnx.graph.load import set_metadata
from hapi_onnx.runtime.preprocess import Preprocessing

METADATA_KEY = "hapi_onnx.input"
FORMAT_VERSION = 1
RECORD = Kind("input record", FORMAT_VERSION)


@dataclass(frozen=True)
class InputRecord:
    """The input side of an EE model's training data.

    Attributes:
        preprocessing (Preprocessing | None): The resolved spec that made the model input from
            pixels (applied to an image folder, or declared with arrays); None when unknown.
        classes (tuple[str, ...] | None): Class names of the training data, if it had them.
    """

    preprocessing: Preprocessing | None = None
    classes: tuple[str, ...] | None = None

    def to_model(self, model: onnx.ModelProto) -> None:
        """Store the record in ``model``'s metadata, in place (replacing an earlier one)."""
        payload = json.dumps({
            "format_version": FORMAT_VERSION,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "classes": None if self.classes is None else list(self.classes),
        })
        set_metadata(model, METADATA_KEY, payload)

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "InputRecord":
        """The record stored by ``attach``; an empty one for a model without it.

        Raises:
            HapiError: when the stored record is malformed.
        """
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            return cls()
        return RECORD.read(props[METADATA_KEY], f"the model's {METADATA_KEY!r} metadata", cls._build)

    @classmethod
    def _build(cls, data: dict[str, Any]) -> "InputRecord":
        spec, classes = data["preprocessing"], data["classes"]
        if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise HapiError(f"'classes' must be a list of strings. Got {classes!r}; attach the heads again.")
        return cls(
            preprocessing=None if spec is None else Preprocessing.from_dict(spec),
            classes=None if classes is None else tuple(classes),
        )
