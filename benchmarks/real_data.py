"""A campaign on a real data set read through the image-folder loader, with its result cards: scikit-learn's
bundled handwritten digits (UCI optdigits, 1,797 8x8 scans), written as PNG files in train/ and test/ folders of
one sub-folder per class (digits-cnn's own split), and digits-cnn's shipped float model given as a file, as a
user brings theirs. The campaign is quantized from the file in int8 and int16x8 on the folder's training part.

    python benchmarks/real_data.py [--samples 200] [--out DIR] [--json real-data.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tinyrobust.assets import MODELS
from tinyrobust.model import zoo

CONFIG = """models = ["{model}"]
data = "{data}"
precisions = ["int8", "int16x8"]
board = "qemu-mps2-an386"
samples = {samples}

[[attacks]]
name = "fgsm"
eps = [0.05, 0.1]

[[attacks]]
name = "pgd"
eps = [0.05, 0.1]

[[attacks]]
name = "square_linf"
eps = [0.1]
mode = "on-device"
max_queries = 300

[[defenses]]
name = "median"
where = "host"
"""


def write_folders(root: Path) -> None:
    """digits-cnn's train and test parts as 8-bit grayscale PNGs: pixel = value / 16 * 255, which the loader
    reads back as value / 16, the model's own input scaling."""
    x_train, y_train, x_test, y_test = zoo.load_dataset(zoo.builtin_spec("digits-cnn"))
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            folder = root / part / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(image[..., 0] * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, help="the campaign's folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=Path("real-data.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "digits"
        write_folders(data)
        config = Path(work) / "campaign.toml"
        model = Path(work) / "digits-cnn.keras"  # named as the cards name it
        shutil.copy(MODELS / "trained" / "digits-cnn" / "float.keras", model)
        config.write_text(CONFIG.format(model=model, data=data, samples=args.samples))
        out = args.out or Path(work) / "run"
        subprocess.run([sys.executable, "-m", "tinyrobust", "campaign", "run", str(config), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        with open(out / "cards.csv") as f:
            cards = list(csv.DictReader(f))
        results = json.loads((out / "results.json").read_text())
    for card in cards:
        print(json.dumps(card))
    args.json.write_text(json.dumps({"cards": cards, "result_cards": results.get("cards")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
