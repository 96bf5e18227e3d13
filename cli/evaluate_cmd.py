"""``hapi-onnx evaluate``: a bundle's accuracy and latency next to the full model, on held-out data."""

import json

import click
from hapi_onnx_cli.console import progress
from hapi_onnx_cli.options import Command, DevicePath, InputPath, OutputPath, preprocess_option


@click.command("evaluate", cls=Command)
@click.argument("bundle", type=InputPath())
@click.option("--data", required=True, type=InputPath(),
              help="Labelled test set (.npz with x, y, or a folder of class subfolders).")
@click.option("--full-model", type=InputPath(), multiple=True,
              help="The early-exit .onnx the bundle was built from (or its original .onnx) to compare with, "
              "same session options; given once, any other model is refused. Repeated: the bundle's own model "
              "gives the speed-up and every other one (same input and classes, e.g. a joint build's "
              "WORKDIR/models/*/model.onnx) is measured beside it.")
@click.option("--device", default="cpu-1t", show_default=True, type=DevicePath(), metavar="NAME|PATH",
              help="Device preset.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also measure throughput at this batch size (compaction vs full model) when > 1.")
@click.option("-o", "--output", type=OutputPath(dir_okay=False), default=None, help="Also write the report as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@preprocess_option("[default: the bundle's spec; another one is refused]")
def command(bundle: str, data: str, full_model: tuple[str, ...], device: str, batch_size: int,
            output: str | None, as_json: bool, preprocessing) -> None:
    """Measure BUNDLE on a labelled test set: accuracy, exits, batch-1 latency, speed-up.

    Same as: hapi_onnx.evaluate.evaluate_bundle(BUNDLE, DATA, DEVICE, FULL_MODEL)
    """
    from hapi_onnx.evaluate import evaluate_bundle

    report = evaluate_bundle(
        bundle, data, device=device, batch_size=batch_size,
        full_model=None if not full_model else full_model[0] if len(full_model) == 1 else list(full_model),
        progress=progress("samples"), preprocessing=preprocessing,
    )
    if output:
        report.save(output)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            click.echo(line)
