"""``hapi-onnx run``: classify the images of a .npy/.npz file with a bundle."""

import json

import click
from hapi_onnx_cli.options import Command, DevicePath, InputPath


@click.command("run", cls=Command)
@click.argument("bundle", type=InputPath())
@click.argument("inputs", type=InputPath())
@click.option("--device", default=None, type=DevicePath(), metavar="NAME|PATH",
              help="Device preset for the sessions [default: ONNX Runtime's CPU defaults].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(bundle: str, inputs: str, device: str | None, as_json: bool) -> None:
    """Run BUNDLE (MODEL.hapi or .hapi.zip) on INPUTS: .npy/.npz model input, or image files.

    INPUTS is an .npy (images as the model takes them), an .npz with key x, an image file, or a
    folder searched for images, which are preprocessed with the bundle's spec. Prints, per
    sample, the class, its confidence and the exit it left at. Same as:
    hapi_onnx.evaluate.predict_file(BUNDLE, INPUTS)
    """
    from hapi_onnx.evaluate import predict_file

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
    if as_json:
        click.echo(json.dumps({"exits": list(model.exit_names), "predictions": rows}))
        return
    click.echo(f"{'#':>5}  {'class':>8}  {'confidence':>10}  exit" + ("      file" if names else ""))
    for row in rows:
        name = row.get("label", row["class"])
        line = f"{row['index']:>5}  {name!s:>8}  {row['confidence']:>10.4f}  {row['exit']:<8}  {row.get('file', '')}"
        click.echo(line.rstrip())
