"""``hapi-onnx run``: classify the images of a .npy/.npz file with a bundle (optionally with the drift monitor)."""

import json

import click
from hapi_onnx_cli.options import Command, DevicePath, InputPath


@click.command("run", cls=Command)
@click.argument("bundle", type=InputPath())
@click.argument("inputs", type=InputPath())
@click.option("--device", default=None, type=DevicePath(), metavar="NAME|PATH",
              help="Device preset for the sessions [default: ONNX Runtime's CPU defaults].")
@click.option("--monitor", is_flag=True,
              help="Process the samples in order, one at a time, with the drift monitor: audited early answers "
                   "move the thresholds along the bundle's certified path (hapi_onnx.runtime.monitor).")
@click.option("--audit-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              metavar="R", help="With --monitor: the share of samples audited (run to the final stage).")
@click.option("--budget", default=None, type=click.FloatRange(0, 100, max_open=True), metavar="PP",
              help="With --monitor: the disagreement budget in points [default: the bundle's certified budget].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="With --monitor: audit seed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(bundle: str, inputs: str, device: str | None, monitor: bool, audit_rate: float, budget: float | None,
            seed: int, as_json: bool) -> None:
    """Run BUNDLE (MODEL.hapi or .hapi.zip) on INPUTS: .npy/.npz model input, or image files.

    INPUTS is an .npy (images as the model takes them), an .npz with key x, an image file, or a
    folder searched for images, which are preprocessed with the bundle's spec. Prints, per
    sample, the class, its confidence and the exit it left at. Same as:
    hapi_onnx.evaluate.predict_file(BUNDLE, INPUTS), or with --monitor
    hapi_onnx.evaluate.monitor_file(BUNDLE, INPUTS, Monitor(audit_rate=R, budget=PP / 100, seed=SEED)),
    which also prints every move of the monitor along the path and its final state.
    """
    from hapi_onnx.evaluate import monitor_file, predict_file
    from hapi_onnx.runtime import Monitor

    if monitor:
        settings = Monitor(audit_rate=audit_rate, budget=None if budget is None else budget / 100, seed=seed)
        model, pred, names = monitor_file(bundle, inputs, settings, device=device)
    else:
        for flag, value, default in (("--audit-rate", audit_rate, 0.1), ("--budget", budget, None),
                                     ("--seed", seed, 0)):
            if value != default:
                raise click.UsageError(f"{flag} needs --monitor.")
        model, pred, names = predict_file(bundle, inputs, device=device)
    labels = model.labels
    rows = [
        {
            "index": i,
            **({"file": names[i]} if names else {}),
            "class": int(c),
            **({"label": labels[int(c)]} if labels else {}),
            "confidence": round(float(p), 6),
            "exit": model.exit_names[int(e)],
            "exit_index": int(e),
        }
        for i, (c, p, e) in enumerate(zip(pred.classes, pred.confidences, pred.exit_index, strict=True))
    ]
    changes = [c.to_dict() for c in model.position_changes()] if monitor else []
    if as_json:
        extra = {"monitor": {"changes": changes, "state": model.monitor_state().to_dict()}} if monitor else {}
        click.echo(json.dumps({"exits": list(model.exit_names), "predictions": rows, **extra}))
        return
    moves = {}
    for c in changes:  # printed before the first sample they apply to
        moves.setdefault(c["sample"], []).append(c)
    click.echo(f"{'#':>5}  {'class':>8}  {'confidence':>10}  exit" + ("      file" if names else ""))
    for row in rows:
        for c in moves.get(row["index"], []):
            click.echo(_move(c))
        name = row.get("label", row["class"])
        line = f"{row['index']:>5}  {name!s:>8}  {row['confidence']:>10.4f}  {row['exit']:<8}  {row.get('file', '')}"
        click.echo(line.rstrip())
    if monitor:
        s = model.monitor_state()
        path = "certified" if s.certified_path else "derived"
        click.echo(f"monitor: position {s.position} of {s.positions - 1} ({path} path), "
                   f"{s.audits_done} audits, {s.changes} moves, disagreement at this position {s.estimate:.4f} "
                   f"(bounds {s.lower:.4f}..{s.upper:.4f}; budget {s.budget:.4f})")


def _move(c: dict) -> str:
    return (f"monitor: position {c['old']} -> {c['new']} after {c['audit']} audits (disagreement at the shipped "
            f"design {c['estimate']:.4f}, lower bound {c['lower']:.4f})")
