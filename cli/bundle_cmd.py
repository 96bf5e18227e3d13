"""``hapi-onnx bundle``: package a design as a staged early-exit bundle."""

import click
from hapi_onnx_cli.options import Command, InputPath, OutputPath


@click.command("bundle", cls=Command)
@click.argument("model", type=InputPath())
@click.option("--design", required=True, type=InputPath(), help="design.json from `hapi-onnx search`.")
@click.option("-o", "--output", required=True, type=OutputPath(),
              help="MODEL.hapi (a directory) or MODEL.hapi.zip (one file).")
@click.option("--zip", "as_zip", is_flag=True, help="Write one zip file whatever the output name.")
@click.option("--labels", default=None, metavar="A,B,...",
              help="Class names, comma-separated, one per class (stored in the manifest).")
@click.option("--preprocessing", default=None, metavar="JSON",
              help='What the input expects, as a JSON object, e.g. \'{"scale": 0.00392, "layout": "NCHW"}\'.')
def command(model: str, design: str, output: str, as_zip: bool, labels: str | None,
            preprocessing: str | None) -> None:
    """Bundle MODEL (the early-exit .onnx the design was searched on) with DESIGN's exits and thresholds.

    Same as: hapi_onnx.bundle.bundle_from_design(MODEL, DESIGN, OUTPUT)
    """
    from hapi_onnx.artifact import parse_json
    from hapi_onnx.bundle import bundle_from_design
    from hapi_onnx.errors import HapiError
    from hapi_onnx.runtime import read_bundle

    extra = None
    if preprocessing is not None:
        expected = f"--preprocessing must be a JSON object {{...}}. Got {preprocessing[:200]!r}"
        try:
            extra = parse_json(preprocessing, "it")
        except HapiError as err:
            raise HapiError(f"{expected}: {err}") from None
        if not isinstance(extra, dict):
            raise HapiError(f"{expected} instead.")
    names = None if labels is None else [s.strip() for s in labels.split(",")]
    path = bundle_from_design(model, design, output, labels=names, preprocessing=extra, zip=as_zip)
    manifest = read_bundle(path).manifest
    for stage in manifest.stages:
        threshold = "-" if stage.threshold is None else f"{stage.threshold:.4f}"
        click.echo(f"  {stage.file:<28} exit {stage.name:<8} threshold {threshold}")
    predicted = (manifest.design or {}).get("predicted") or {}
    if "accuracy" in predicted and "mean_ms" in predicted:
        click.echo(f"  predicted: accuracy {predicted['accuracy']:.4f}, mean {predicted['mean_ms']:.3f} ms")
    click.echo(f"wrote {path}")
