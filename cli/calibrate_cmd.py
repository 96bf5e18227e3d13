"""``hapi-onnx calibrate``: record every exit's predictions on a labelled set (the trace)."""

import click
from hapi_onnx_cli.console import format_table, progress
from hapi_onnx_cli.options import Command, InputPath, OutputPath, preprocess_option


@click.command("calibrate", cls=Command)
@click.argument("ee_model", type=InputPath(dir_okay=False))
@click.option("--data", "data_path", required=True, type=InputPath(),
              help="Calibration set (.npz x, y, or a folder of class subfolders; or unlabelled: .npy / .npz "
              "without y, for --reference final), not the set the heads were fitted on.")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False), help="Trace to write (.npz).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per ONNX Runtime run [default: up to 256, at most 32 MiB of input].")
@preprocess_option("[default: the spec attach recorded in EE_MODEL; another one is refused]")
def command(ee_model, data_path, output, batch_size, preprocessing) -> None:
    """Run EE_MODEL (from `hapi-onnx attach`) over --data and write every exit's decisions.

    Same as: hapi_onnx.calibrate.calibration_report(EE_MODEL, DATA)
    """
    from hapi_onnx.calibrate import calibration_report

    trace, rows = calibration_report(ee_model, data_path, batch_size=batch_size, progress=progress("calibrate"),
                                     preprocessing=preprocessing)
    trace.save(output)
    table = [[r.name, r.tensor, "?" if r.mac_fraction is None else f"{r.mac_fraction:.3f}",
              "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}", f"{100 * r.agreement:.2f}",
              f"{r.mean_confidence:.3f}"] for r in rows]
    click.echo(format_table(["exit", "tensor", "MACs", "accuracy %", "agrees with final %", "mean conf"], table))
    unlabelled = "" if trace.labelled else " (no labels: search it with --reference final)"
    click.echo(f"wrote {output}: {trace.num_exits} exits x {trace.num_samples} samples{unlabelled}")
