"""What the heads of an early-exit model were fitted on: the preprocessing spec and class names.

``attach`` stores it in the EE model's metadata (key ``hapi_onnx.input``), next to the exit
layout. ``calibrate`` and ``bundle`` read it, so an image folder is preprocessed the same way at
every step without repeating the spec, a split whose class names differ is refused, and the
bundle's manifest carries the spec and the class names.
"""

import json
from dataclasses import dataclass

import onnx

from hapi_onnx.artifact import parse_json
from hapi_onnx.errors import HapiError
from hapi_onnx.graph.load import set_metadata
from hapi_onnx.runtime.preprocess import Preprocessing

METADATA_KEY = "hapi_onnx.input"
FORMAT_VERSION = 1


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
        try:
            data = parse_json(props[METADATA_KEY], f"the model's {METADATA_KEY!r} metadata")  # bounded, as layout
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
            spec = data["preprocessing"]
            classes = data["classes"]
            if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
                raise ValueError("'classes' must be a list of strings")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise HapiError(
                f"The model's {METADATA_KEY!r} metadata is malformed ({err}); attach the heads again."
            ) from None
        return cls(
            preprocessing=None if spec is None else Preprocessing.from_dict(spec),
            classes=None if classes is None else tuple(classes),
        )
