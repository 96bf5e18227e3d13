"""Train the demo backbone on real MNIST digits and export it to ONNX.

The model (``model.py:build_model``, a ResNet-20-style CNN) is trained on the 3,000-image
``train`` split of :func:`hapi_onnx.data.mnist_splits` (seed 0, the same split that
``hapi-onnx data mnist -o DIR`` writes) with random shifts of up to 2 pixels, SGD with Nesterov
momentum and a one-cycle learning-rate schedule (short warm-up, cosine decay). The ``test``
split is only scored at the end, never used for any choice; ``calib`` accuracy is printed per
epoch for information.

Outputs, next to this file by default:
    resnet_mnist.pt   the state dict (weights only; load with torch.load(..., weights_only=True))
    model.onnx        opset 17, input ``input`` N x 1 x 28 x 28 (dynamic N), output ``logits``,
                      verified against PyTorch by :func:`hapi_onnx.export.export_torch`

Run (CPU, about 4 minutes on 2 cores)::

    .venv/bin/python examples/mnist/train.py

Another model, trained and exported the same way (``examples/mnist_mbv2``)::

    .venv/bin/python examples/mnist/train.py --factory examples/mnist_mbv2/model.py:build_model \
        --weights mbv2_mnist.pt --out-dir examples/mnist_mbv2 --threads 1

A narrower ResNet (8/16/32 channels, ``examples/mnist_narrow``, test 98.5%; 297 s on one thread of
a busy 2-core machine), one of the backbones of ``bench/bench_backbones.py``::

    .venv/bin/python examples/mnist/train.py --factory examples/mnist/model.py:build_narrow \
        --weights resnet_narrow.pt --out-dir examples/mnist_narrow --threads 1
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hapi_onnx.data import Dataset, load_dataset, mnist_splits
from hapi_onnx.export.factory import resolve_factory
from hapi_onnx.files import atomic_output

HERE = Path(__file__).resolve().parent


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder with train/calib/test.npz [default: in memory]")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write weights and model.onnx")
    parser.add_argument("--factory", default=f"{HERE / 'model.py'}:build_model", help="file.py:name of the model")
    parser.add_argument("--weights", default="resnet_mnist.pt", help="file name of the state dict")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y (zero fill)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * max_shift)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    return torch.gather(out, 3, cols)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: Dataset, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        logits = model(torch.from_numpy(data.x[i : i + batch_size]))
        correct += int((logits.argmax(1).numpy() == data.y[i : i + batch_size]).sum())
    return correct / len(data)


def train(args: argparse.Namespace, train_set: Dataset, calib_set: Dataset) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = resolve_factory(args.factory)()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    steps_per_epoch = -(-len(train_set) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0,
    )
    x_all, y_all = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        total_loss = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(random_shift(x_all[idx], generator)), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
        print(
            f"epoch {epoch + 1:2d}/{args.epochs}  loss {total_loss / len(order):.4f}  "
            f"calib acc {accuracy(model, calib_set):.4f}",
            flush=True,
        )
    return model.eval()


def main(argv=None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    if args.data is not None:
        splits = {name: load_dataset(args.data / f"{name}.npz") for name in ("train", "calib", "test")}
    else:
        splits = mnist_splits(seed=0)
    start = time.perf_counter()
    model = train(args, splits["train"], splits["calib"])
    train_s = time.perf_counter() - start
    test_acc = accuracy(model, splits["test"])
    print(f"train time {train_s:.1f} s ({args.epochs} epochs, {len(splits['train'])} images, "
          f"{args.threads} threads); test accuracy {test_acc:.4f} on {len(splits['test'])} held-out images")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / args.weights
    with atomic_output(weights) as tmp, open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)

    from hapi_onnx.export import export_torch

    samples = splits["test"].x[:64]
    report = export_torch(args.factory, weights, (1, 1, 28, 28),
                          args.out_dir / "model.onnx", opset=17, samples=samples)
    print(f"wrote {weights} and {report.output}; ONNX Runtime vs PyTorch max |diff| "
          f"{report.max_abs_diff:.2e} on {report.samples} test images")


if __name__ == "__main__":
    main()
