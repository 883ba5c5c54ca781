"""tinyrobust: adversarial robustness of quantized neural networks, measured on Cortex-M devices."""

__version__ = "0.1.0"
