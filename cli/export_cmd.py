"""``hapi-onnx export``: a PyTorch checkpoint or an ONNX file -> a normalised, verified ONNX model."""

import click
from hapi_onnx_cli.options import Command, InputPath, InputShape, OutputPath


@click.command("export", cls=Command)
@click.argument("source", type=InputPath())
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False), help="The .onnx file to write.")
@click.option("--factory", help="PyTorch only: path/to/model.py:build_model or package.module:build_model.")
@click.option("--input-shape", type=InputShape(), help="N,C,H,W, e.g. 1,1,28,28 (required for PyTorch).")
@click.option("--opset", type=int, help="Target opset [default: 17 for PyTorch; ONNX: its own, at least 13].")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed |ONNX Runtime - source| on any output.")
@click.option("--data", "data", type=InputPath(), help="Verify on the first 32 images of this dataset "
              "(.npz/.npy/folder) instead of 8 random images.")
def command(source, output, factory, input_shape, opset, tolerance, data) -> None:
    """Convert SOURCE (model.onnx, or a .pt/.pth state dict with --factory) to a verified ONNX model.

    The result has a dynamic batch axis, inferred shapes and opset >= 13, and is written only if
    ONNX Runtime reproduces the source within --tolerance.

    \b
    Examples:
      hapi-onnx export examples/mnist/resnet_mnist.pt --factory examples/mnist/model.py:build_model \\
          --input-shape 1,1,28,28 -o model.onnx
      hapi-onnx export old_opset11.onnx -o model.onnx
    """
    from hapi_onnx.export import export_model

    report = export_model(source, output, factory=factory, input_shape=input_shape, opset=opset,
                          tolerance=tolerance, samples=data)
    click.echo(report.summary())
