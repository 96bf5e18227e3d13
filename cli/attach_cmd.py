"""``hapi-onnx attach``: fit exit heads on the frozen backbone and write the over-provisioned model."""

import click
from hapi_onnx_cli.console import format_table, progress
from hapi_onnx_cli.options import Command, InputPath, OutputPath, comma_names, preprocess_option

from hapi_onnx.exits.pooling import POOLINGS


def describe_spec(spec) -> str:
    """One line for a preprocessing spec: its steps."""
    parts = []
    if spec.resize is not None:
        parts.append(f"resize {spec.resize}")
    if spec.size is not None:
        parts.append(f"size {spec.size[0]}x{spec.size[1]}")
    if spec.crop is not None:
        parts.append(f"crop {spec.crop[0]}x{spec.crop[1]}")
    parts.append(f"scale {spec.scale:.6g}")
    if any(spec.mean) or any(s != 1 for s in spec.std):
        parts.append("mean " + ",".join(f"{m:g}" for m in spec.mean) + " std " + ",".join(f"{v:g}" for v in spec.std))
    parts += [spec.channel_order or "channels from the model", spec.layout or "layout from the model"]
    return ", ".join(parts)


def _shape(shape: list) -> str:
    return "x".join(str(d) for d in shape[1:])


@click.command("attach", cls=Command)
@click.argument("model", type=InputPath(dir_okay=False))
@click.option("--data", "data_path", type=InputPath(),
              help="Labelled training set to fit heads on: .npz (x, y) or a folder with one subfolder of images "
              "per class.")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="EE model to write (.onnx).")
@click.option("--exits", default=None,
              help="Comma-separated cut tensors to put heads on (default: all candidates).")
@click.option("--max-candidates", type=click.IntRange(min=1), default=None,
              help="With no --exits: at most this many candidate exits.")
@click.option("--pooling", type=click.Choice(POOLINGS), default="auto", show_default=True,
              help="Features the heads read: global average, or global + 2x2 grid averages; auto: the grid "
              "on cuts of up to 409 channels.")
@click.option("--exits-from-outputs", is_flag=True,
              help="Take the model's extra outputs as ready-made exits (SDN/MSDNet style); fit nothing.")
@click.option("--final-output", default=None, help="The final classifier output (default: the first output, "
              "or the last one with --exits-from-outputs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per ONNX Runtime run during feature collection [default: up to 256, at most 32 MiB "
              "of input].")
@preprocess_option("[default: none: pixels / 255 at their own size]")
def command(model, data_path, output, exits, max_candidates, pooling, exits_from_outputs, final_output,
            batch_size, preprocessing) -> None:
    """Fit a softmax head at each candidate exit of MODEL (backbone frozen) and graft them in.

    The written model keeps the original output first and unchanged, and adds one probability
    output per exit. Heads are multinomial logistic regressions on pooled features (scipy
    L-BFGS); regularisation and temperature are chosen on a held-out part of --data. The
    preprocessing and class names are stored in the written model for calibrate and bundle.
    With --exits-from-outputs, the model's extra outputs are taken as the exits instead.

    Same as: hapi_onnx.exits.attach.attach(MODEL, DATA, from_outputs=..., final_output=..., ...)
    """
    from hapi_onnx.exits.attach import attach
    from hapi_onnx.graph import load_notes

    result = attach(model, data_path, from_outputs=exits_from_outputs, final_output=final_output,
                    exits=comma_names(exits, "--exits"), pooling=pooling, max_candidates=max_candidates,
                    progress=progress("features"), batch_size=batch_size, preprocessing=preprocessing,
                    head_progress=progress("heads"))
    result.save(output)
    layout = result.layout
    for note in load_notes(result.model):
        click.echo(f"note: {note}", err=True)
    if layout.precision:
        click.echo(f"note: backbone {layout.precision['backbone']}; heads {layout.precision['heads']}", err=True)
    if exits_from_outputs:
        rows = [[e.name, e.tensor, e.output] for e in layout.exits]
        rows.append(["final", layout.final_output, layout.final_output])
        click.echo(format_table(["exit", "tensor", "output"], rows))
        click.echo(f"wrote {output}: {len(layout.exits)} exits taken from the model's outputs")
        return
    rows = [[h.name, h.tensor, _shape(h.shape), f"{h.mac_fraction:.3f}", f"{h.feature_dim} {h.pooling}",
             f"{100 * h.train_accuracy:.2f}", f"{100 * h.heldout_accuracy:.2f}", f"{h.temperature:.3f}", f"{h.l2:g}",
             h.solver, f"{h.fit_seconds:.2f}"]
            for h in result.heads]
    headers = ["exit", "tensor", "shape", "MACs", "features", "train %", "held-out %", "T", "L2", "solver", "fit s"]
    click.echo(format_table(headers, rows))
    fit_total = sum(h.fit_seconds for h in result.heads)
    click.echo(f"wrote {output}: {len(result.heads)} heads on {result.num_samples} images "
               f"(features {result.feature_seconds:.1f} s, fitting {fit_total:.1f} s)")
    spec = result.input_record.preprocessing
    if spec is not None:
        click.echo(f"preprocessing recorded for calibrate and bundle: {describe_spec(spec)}")
