"""``hapi-onnx exits MODEL``: list the candidate exits (single-tensor cut points) of a model."""

import json

import click
from hapi_onnx_cli.options import Command, InputPath

from hapi_onnx.graph import candidate_exits, load_model, load_notes


@click.command("exits", cls=Command)
@click.argument("model", type=InputPath(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--max-candidates", type=click.IntRange(min=1), default=None,
              help="Keep at most K, spread evenly over the cumulative MACs (the deepest is kept).")
def command(model: str, as_json: bool, max_candidates: int | None) -> None:
    """List MODEL's candidate exits in graph order, with shape and cumulative MAC fraction.

    Same as ``candidate_exits(load_model(MODEL), max_candidates=K)`` in Python.
    """
    loaded = load_model(model)
    for note in load_notes(loaded):
        click.echo(f"note: {note}", err=True)
    candidates = candidate_exits(loaded, max_candidates=max_candidates)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in candidates], indent=2))
        return
    rows = [("#", "tensor", "shape", "MACs (cum.)", "fraction")]
    for k, cand in enumerate(candidates):
        shape = "x".join(str(d) for d in cand.shape)
        rows.append((str(k), cand.tensor, shape + ("" if cand.dtype == "float32" else f" {cand.dtype}"),
                     f"{cand.macs:,}", f"{cand.fraction:6.1%}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {0, 3, 4}
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())
    click.echo(f"{len(candidates)} candidate exit(s).")
