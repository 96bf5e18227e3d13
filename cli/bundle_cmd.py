"""``hapi-onnx bundle``: package a design as a staged early-exit bundle."""

import click
from hapi_onnx_cli.options import PREPROCESS_HELP, Command, InputPath, OutputPath, parse_preprocess


@click.command("bundle", cls=Command)
@click.argument("model", type=InputPath())
@click.option("--design", required=True, type=InputPath(), help="design.json from `hapi-onnx search`.")
@click.option("-o", "--output", required=True, type=OutputPath(),
              help="MODEL.hapi (a directory) or MODEL.hapi.zip (one file).")
@click.option("--zip", "as_zip", is_flag=True, help="Write one zip file whatever the output name.")
@click.option("--labels", default=None, metavar="A,B,...",
              help="Class names, comma-separated, one per class (stored in the manifest) [default: the class "
              "names of attach's training data, if it had them].")
@click.option("--preprocess", "--preprocessing", "preprocessing", default=None, metavar="PRESET|JSON|FILE",
              callback=parse_preprocess,
              help=f"{PREPROCESS_HELP} Stored in the manifest for EarlyExitModel.preprocess [default: the spec "
              "attach recorded in MODEL; another one is refused].")
def command(model: str, design: str, output: str, as_zip: bool, labels: str | None, preprocessing) -> None:
    """Bundle MODEL (the early-exit .onnx the design was searched on) with DESIGN's exits and thresholds.

    Same as: hapi_onnx.bundle.bundle_from_design(MODEL, DESIGN, OUTPUT)
    """
    from hapi_onnx.bundle import bundle_from_design
    from hapi_onnx.runtime import read_bundle

    names = None if labels is None else [s.strip() for s in labels.split(",")]
    path = bundle_from_design(model, design, output, labels=names, preprocessing=preprocessing, zip=as_zip)
    manifest = read_bundle(path).manifest
    for stage in manifest.stages:
        threshold = "-" if stage.threshold is None else f"{stage.threshold:.4f}"
        click.echo(f"  {stage.file:<28} exit {stage.name:<8} threshold {threshold}")
    predicted = (manifest.design or {}).get("predicted") or {}
    if "accuracy" in predicted and "mean_ms" in predicted:
        click.echo(f"  predicted: accuracy {predicted['accuracy']:.4f}, mean {predicted['mean_ms']:.3f} ms")
    click.echo(f"wrote {path}")
