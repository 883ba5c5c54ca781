"""The files that ship with the package: the firmware sources, the board files and the model files.

In the repository they are the top-level firmware/, boards/ and models/ folders; pyproject.toml maps them into
this package, so an editable install and a wheel find them the same way, from any working directory."""

from importlib import resources
from pathlib import Path


def _folder(name: str) -> Path:
    # pip unpacks wheels, so the package's files are always real files on disk (the compiler needs paths).
    return Path(str(resources.files(f"tinyrobust.assets.{name}")))


FIRMWARE = _folder("firmware")
BOARDS = _folder("boards")
MODELS = _folder("models")
