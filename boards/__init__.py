"""Board files, shipped as tinyrobust.assets.boards."""
