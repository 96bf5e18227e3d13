"""Write a stand-in for your own data and model: a folder of photos and a trained PyTorch state dict.

    python examples/your-model/make_example.py OUT

writes ``OUT/photos/{train,calib,test}/<class>/*.png`` (generated photos of 40-64 px a side:
a disc, a square or stripes on a noisy background, most in their class's colour, the rest in any
colour: easy and hard photos) and ``OUT/weights.pt``, the state dict of
``model.py:build_model`` trained on ``photos/train`` for a few seconds on the CPU, with the same
preprocessing the build is given (``--preprocess '{"resize": 36, "crop": 32}'``: shorter side to
36 px, centre crop 32 x 32, pixels / 255). Swap in your own photos and weights: nothing else in
docs/your-model.md changes but the paths, the factory and the input shape.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "stripes")
PALETTE = {"disc": np.array([220, 60, 40]), "square": np.array([40, 170, 60]), "stripes": np.array([50, 80, 220])}
SPLITS = {"train": 200, "calib": 300, "test": 100}  # photos per class
SPEC = {"resize": 36, "crop": 32}


def photo(kind: str, rng: np.random.Generator) -> Image.Image:
    """One photo of ``kind``: its size, position, scale, colours and contrast drawn at random."""
    h, w = (int(v) for v in rng.integers(40, 65, 2))
    background = rng.integers(60, 196, 3)
    pixels = np.clip(background + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.7:  # most photos: the class's usual colour, easy from the first layers on
        colour = tuple(int(v) for v in np.clip(PALETTE[kind] + rng.normal(0, 20, 3), 0, 255))
    else:  # the rest: any colour, faint or not: only the shape tells
        contrast = rng.choice([40, 80, 130])
        colour = tuple(int(v) for v in np.clip(background + rng.choice([-1, 1], 3) * contrast, 0, 255))
    size = rng.uniform(0.35, 0.75) * min(h, w)
    cy, cx = rng.uniform(size / 2 + 2, h - size / 2 - 2), rng.uniform(size / 2 + 2, w - size / 2 - 2)
    box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        for x in np.arange(box[0], box[2], 4.0):
            draw.rectangle((x, box[1], x + 1.9, box[3]), fill=colour)
    return image


def write_photos(out: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, per_class in SPLITS.items():
        for kind in CLASSES:
            folder = out / "photos" / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                photo(kind, rng).save(folder / f"{i:04d}.png")
    return out / "photos"


def train(photos: Path, weights: Path, epochs: int = 8, seed: int = 0) -> float:
    """Train ``build_model()`` on ``photos/train`` (preprocessed as the build will be); returns its
    accuracy on ``photos/test``."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from model import build_model

    from hapi_onnx.data import load_dataset  # decodes and preprocesses the folders with the spec

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    train_set, test_set = (load_dataset(photos / split, SPEC) for split in ("train", "test"))
    x, y = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test_set.x)).argmax(1).numpy() == test_set.y).mean()
    torch.save(model.state_dict(), weights)
    return float(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write photos/ and weights.pt into")
    args = parser.parse_args()
    photos = write_photos(args.out)
    accuracy = train(photos, args.out / "weights.pt")
    print(f"wrote {photos}/{{train,calib,test}}/{{{','.join(CLASSES)}}}/*.png and {args.out / 'weights.pt'} "
          f"(test accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
