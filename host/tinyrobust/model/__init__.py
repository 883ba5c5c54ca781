"""The model: built-in models and user files (zoo), quantization, and the host references (float, TFLite, TFLM)."""
