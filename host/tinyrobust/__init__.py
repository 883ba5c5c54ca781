"""tinyrobust: adversarial robustness of quantized neural networks, measured on Cortex-M devices."""

from pathlib import Path

__version__ = "0.1.0"

# The package runs from its source tree (pip install -e .): firmware/, models/ and boards/ are beside host/.
ROOT = Path(__file__).resolve().parents[2]
