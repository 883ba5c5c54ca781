"""Built-in model files, shipped as tinyrobust.assets.models."""
