"""Built-in models layer by layer on a board (`tinyrobust profile`): each layer's MACs and instructions, the sum
check against a normal build's inference, memory, and the three most expensive layers; one JSON file per model.

    python benchmarks/profile.py [--board qemu-mps2-an386] [--models resnet8-cifar10,mobilenetv1-vww,dscnn-kws]
                                 [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tinyrobust.console import status
from tinyrobust.device.boards import DEFAULT_BOARD
from tinyrobust.profile import format_profile, profile_board

MODELS = "resnet8-cifar10,mobilenetv1-vww,dscnn-kws"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default=DEFAULT_BOARD)
    parser.add_argument("--models", default=MODELS, help="comma-separated built-in names or .tflite files")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for profile-<model>.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for model in (m.strip() for m in args.models.split(",") if m.strip()):
        status(f"profile {model} on {args.board}")
        started = time.monotonic()
        result = profile_board(model, args.board, args.precision).as_dict()
        result["wall_seconds"] = round(time.monotonic() - started, 1)
        print(format_profile(result))
        top = sorted(result["layers"], key=lambda layer: -layer["count"])[:3]
        print("most expensive: " + "; ".join(
            f"{t['index']} {t['op']} {t['count']:,.0f} ({t['share']:.1%})" for t in top))  # fmt: skip
        path = args.out / f"profile-{result['model']}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wall time {result['wall_seconds']} s; written to {path}\n")


if __name__ == "__main__":
    main()
