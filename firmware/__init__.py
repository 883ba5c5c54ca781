"""Firmware sources, shipped as tinyrobust.assets.firmware."""
