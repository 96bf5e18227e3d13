"""The result of an export: where the model went and how closely it matches its source."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportReport:
    """What :func:`~hapi_onnx.export.export_torch` / :func:`~hapi_onnx.export.export_onnx` wrote.

    Attributes:
        output (str): Path of the written ONNX model.
        opset (int): Its default-domain opset.
        input_name (str): Name of the image input.
        input_shape (tuple): Input dims, ``"N"`` for the dynamic batch.
        output_names (tuple[str, ...]): Graph outputs, in order.
        reference (str): What the model was verified against ("PyTorch" or "the source ONNX model").
        max_abs_diff (float): Largest absolute difference over all outputs and samples.
        tolerance (float): The limit it had to stay within.
        samples (int): Number of inputs the verification ran on.
        sample_source (str): Where those inputs came from ("random uniform [0, 1)" or a description).
    """

    output: str
    opset: int
    input_name: str
    input_shape: tuple
    output_names: tuple[str, ...]
    reference: str
    max_abs_diff: float
    tolerance: float
    samples: int
    sample_source: str

    def summary(self) -> str:
        """Two lines for humans: the verification and what was written."""
        shape = " x ".join(str(d) for d in self.input_shape)
        return (
            f"verified against {self.reference}: max |diff| {self.max_abs_diff:.2e} <= {self.tolerance:g} "
            f"on {self.samples} {self.sample_source} samples\n"
            f"wrote {self.output} (opset {self.opset}, input {self.input_name!r} {shape}, "
            f"outputs {', '.join(map(repr, self.output_names))})"
        )
