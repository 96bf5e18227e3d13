"""``hapi-onnx split MODEL -o DIR``: write the segments between cut tensors, plus index.json."""

import click
from hapi_onnx_cli.options import Command, InputPath, OutputPath, comma_names

from hapi_onnx.graph import write_split


@click.command("split", cls=Command)
@click.argument("model", type=InputPath(dir_okay=False))
@click.option("-o", "--output", "directory", required=True, type=OutputPath(),
              help="Directory to create (segment_00.onnx, ..., index.json).")
@click.option("--at", "at", default=None, metavar="NAME,...",
              help="Comma-separated tensors to split at. Defaults to every candidate exit.")
def command(model: str, directory: str, at: str | None) -> None:
    """Split MODEL into segments at cut tensors; feeding each into the next reproduces MODEL.

    Same as ``write_split(MODEL, DIR, at=[...])`` in Python.
    """
    index = write_split(model, directory, at=comma_names(at, "--at"))
    for entry in index.segments:
        click.echo(f"{entry.file}: {', '.join(entry.inputs)} -> {', '.join(entry.outputs)}")
    click.echo(f"wrote {len(index.segments)} segment(s) and index.json to {directory}")
