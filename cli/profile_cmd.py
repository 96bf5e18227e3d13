"""``hapi-onnx profile``: time every segment and head of an early-exit model on a device preset."""

import click
from hapi_onnx_cli import console
from hapi_onnx_cli.options import Command, DevicePath, InputPath, OutputPath

from hapi_onnx.profile.presets import available_presets


@click.command("profile", cls=Command)
@click.argument("model", type=InputPath())
@click.option("--device", required=True, type=DevicePath(), metavar="NAME|PATH",
              help=f"Device preset: one of {', '.join(available_presets())}, or a preset .json file.")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="The latency table (.json) to write.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size of every timed run [default: the preset's first, 1].")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Seconds of timed runs per piece, overriding the preset's budget.")
def command(model: str, device: str, output: str, batch_size: int | None, time_budget: float | None) -> None:
    """Profile the segments and heads of MODEL (an early-exit .onnx from `attach`) on a device.

    Progress goes to stderr; the table (ms per piece, per-call overhead, monolithic model) to
    stdout. Same as: hapi_onnx.profile.profile_model(MODEL, DEVICE).save(OUTPUT)
    """
    from hapi_onnx.profile import profile_model, table_lines

    table = profile_model(model, device, batch_size=batch_size, time_budget_s=time_budget,
                          progress=console.log)
    table.save(output)
    for line in table_lines(table):
        click.echo(line)
    click.echo(f"wrote {output} ({table.extra['profile_wall_s']:.1f} s)")
