"""Compile: a quantized .tflite becomes a static schedule of kernel calls, a planned arena and C data."""
