"""Data sets on disk, read as the models take them: a user's .npz, CIFAR-10's binary distribution (its
cifar-10-batches-bin folder or the .tar.gz it comes in) and folders of images with one sub-folder per class
(Visual Wake Words, the coffee leaves).

Images become float32 pixels / 255 at the model's input shape (height, width, 1 or 3 channels): the domain of
the built-in image models, whose int8 input has scale 1/255. A converted data set is cached as an .npz of its
uint8 pixels under the cache folder, keyed by its source and the shape, so that the next run skips the
decoding. Nothing is ever downloaded."""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyrobust.errors import UserError

CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then the red, green and blue planes of a 32 x 32 image
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Changes when a conversion changes, so that no cache made by an earlier one is read.
CONVERSION = "1"

WHAT_TO_PASS = (
    "CIFAR-10's binary version (cifar-10-binary.tar.gz or its cifar-10-batches-bin folder), a folder of images "
    "with one sub-folder per class, or an .npz"
)


@dataclass
class DataSet:
    """Inputs and integer labels of a source: its training part and, when the source has one of its own (CIFAR-10's
    test batch, a test/ folder), its test part; without one, x and y are everything, to be split by the caller."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    key: str  # sha256 of the source (and, for images, the shape): names what is cached from it


def read(path: Path, shape: tuple[int, ...] | None, cache: Path) -> DataSet:
    """The data set at path: an .npz as saved (arrays x_train, y_train, x_test, y_test, or x and y), or CIFAR-10 or
    an image folder converted to float pixels / 255 of shape (height, width, channels), cached in cache."""
    path = Path(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    if not path.exists():
        raise UserError(f"data set {path} does not exist; put {WHAT_TO_PASS} there and pass its path")
    kind = _kind(path)
    image_shape = _image_shape(shape, path)
    key = _source_hash(path, image_shape)
    cached = cache / f"{kind}-{key[:16]}.npz"
    arrays = _read_cache(cached)
    if arrays is None:
        arrays = _convert(path, kind, image_shape)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        partial.replace(cached)  # whole or absent, when runs convert the same data side by side
    x, x_test = (_scaled(arrays[k]) if k in arrays else None for k in ("x", "x_test"))
    y, y_test = (arrays[k].astype(np.int64) if k in arrays else None for k in ("y", "y_test"))
    return DataSet(x, y, x_test, y_test, key)


def _scaled(pixels: np.ndarray) -> np.ndarray:
    x = pixels.astype(np.float32)
    x /= 255.0  # in place: a large data set's float copy is four times its pixels already
    return x


def source_key(path: Path, shape: tuple[int, ...] | None) -> str:
    """What read gives as the data set's key, without reading it: the contents of an .npz; for the others, the
    source and the shape its images are converted to."""
    path = Path(path)
    if path.suffix == ".npz":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return _source_hash(path, _image_shape(shape, path))


def _read_npz(path: Path) -> DataSet:
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; pass an .npz with arrays x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not an .npz of numeric arrays ({exc}); save it with np.savez") from None
    key = hashlib.sha256(path.read_bytes()).hexdigest()
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        return DataSet(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], key)
    if {"x", "y"} <= set(arrays):
        return DataSet(arrays["x"], arrays["y"], None, None, key)
    raise UserError(f"{path} holds {', '.join(arrays) or 'no arrays'}; a built-in model's data needs arrays "
                    "x_train, y_train, x_test, y_test (or x and y)")  # fmt: skip


def _kind(path: Path) -> str:
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz")):
            return "cifar10"
        raise UserError(f"{path} is not a data set tinyrobust reads; pass {WHAT_TO_PASS}")
    if _cifar_folder(path) is not None:
        return "cifar10"
    return "images"


def _cifar_folder(path: Path) -> Path | None:
    """The folder holding CIFAR-10's batches: path itself, or the cifar-10-batches-bin folder in it."""
    for folder in (path, path / CIFAR_FOLDER):
        if any((folder / name).is_file() for name in (*CIFAR_TRAIN, CIFAR_TEST)):
            return folder
    return None


def _image_shape(shape: tuple[int, ...] | None, path: Path) -> tuple[int, int, int]:
    if shape is None or len(shape) != 3 or shape[2] not in (1, 3):
        raise UserError(f"{path} holds images, and this model's inputs are of shape {shape}, not (height, width, "
                        "1 or 3 channels); pass an .npz of its inputs instead")  # fmt: skip
    return tuple(int(s) for s in shape)


def _source_hash(path: Path, shape: tuple[int, int, int]) -> str:
    """sha256 of a file's contents, or of a folder's sorted file paths, sizes and modification times, and of the
    shape: a folder of a hundred thousand images is listed, not read."""
    digest = hashlib.sha256(f"{CONVERSION} {shape}".encode())
    if path.is_file():
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    else:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zlib.error):
        return None  # a damaged cache entry is made again


def _convert(path: Path, kind: str, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """uint8 pixels of the given shape and uint8 labels: arrays x and y, with x_test and y_test where the source
    has a test part."""
    if kind == "cifar10":
        batches = _cifar_batches(path)
        train = [_cifar_records(batches[name], name, path) for name in CIFAR_TRAIN]
        x_test, y_test = _cifar_records(batches[CIFAR_TEST], CIFAR_TEST, path)
        x, y = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
        return {"x": _fit_all(x, shape), "y": y, "x_test": _fit_all(x_test, shape), "y_test": y_test}
    train, test = path / "train", path / "test"
    if train.is_dir() and test.is_dir():
        classes = _classes(train)
        if _classes(test) != classes:
            raise UserError(f"{test} has classes {', '.join(_classes(test))} and {train} has "
                            f"{', '.join(classes)}; give both the same class folders")  # fmt: skip
        (x, y), (x_test, y_test) = (_read_images(part, classes, shape) for part in (train, test))
        return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
    x, y = _read_images(path, _classes(path), shape)
    return {"x": x, "y": y}


def _cifar_batches(path: Path) -> dict[str, bytes]:
    """The six batch files' bytes, from the folder or, without unpacking it, from the .tar.gz."""
    names = (*CIFAR_TRAIN, CIFAR_TEST)
    if path.is_dir():
        folder = _cifar_folder(path)
        found = {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    else:
        found = {}
        try:
            with tarfile.open(path, "r:gz") as archive:
                for member in archive:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in names:
                        found[name] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise UserError(f"{path} is not a readable .tar.gz ({exc}); download cifar-10-binary.tar.gz "
                            "again") from None  # fmt: skip
    missing = [name for name in names if name not in found]
    if missing:
        raise UserError(f"{path} lacks CIFAR-10's {', '.join(missing)}; it needs data_batch_1.bin to data_batch_5.bin "
                        "and test_batch.bin, as in cifar-10-binary.tar.gz")  # fmt: skip
    return found


def _cifar_records(blob: bytes, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) and labels of one batch file: records of a label byte and the image's planes."""
    if not blob or len(blob) % CIFAR_RECORD:
        raise UserError(f"{name} in {path} is truncated or not a CIFAR-10 batch ({len(blob)} bytes, not a whole number "
                        f"of {CIFAR_RECORD}-byte records); download cifar-10-binary.tar.gz again")  # fmt: skip
    records = np.frombuffer(blob, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0]
    if labels.max() > 9:
        raise UserError(f"{name} in {path} is not a CIFAR-10 batch (a label byte is {labels.max()}, not 0 to 9); "
                        "download cifar-10-binary.tar.gz again")  # fmt: skip
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.copy()


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{folder} has no class folders; put each class's images in a sub-folder named after the "
                        f"class ({folder}/<class>/*.png), or in train/<class>/ and test/<class>/")  # fmt: skip
    return classes


def _read_images(folder: Path, classes: list[str], shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every image under folder/<class>/ (sorted by path), fitted to shape; labels are the classes' positions."""
    x, y = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if _is_image(p))
        if not files:
            raise UserError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "add its images or remove the folder")  # fmt: skip
        x.extend(_read_image(file, shape) for file in files)
        y.extend([label] * len(files))
    return np.stack(x), np.asarray(y, np.uint8 if len(classes) <= 256 else np.int64)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _read_image(file: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return _fit(image, shape)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {file} as an image ({exc}); replace or remove it") from None


def _fit(image, shape: tuple[int, int, int]) -> np.ndarray:
    """A Pillow image as uint8 (height, width, channels): grayscale or RGB, resized bilinearly (antialiased when
    shrinking) when its size differs."""
    from PIL import Image

    height, width, channels = shape
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8).reshape(shape)


def _fit_all(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images at shape: as they are when it is theirs, else each through _fit."""
    if images.shape[1:] == shape:
        return images
    from PIL import Image

    return np.stack([_fit(Image.fromarray(image), shape) for image in images])
