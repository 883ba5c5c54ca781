"""Data sets from disk: CIFAR-10's binary distribution, folders of images, the cache of converted data sets, the
one-sentence errors, and a flash-and-evaluate run that trains a built-in model on an image folder."""

import json
import tarfile

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from conftest import quantized_model, tinyrobust
from tinyrobust.errors import UserError
from tinyrobust.model import datasets, zoo

CIFAR = zoo.builtin_spec("resnet8-cifar10")  # 32 x 32 x 3, 10 classes
DIGITS = zoo.builtin_spec("digits-cnn")  # 8 x 8 x 1, 10 classes
COFFEE = zoo.builtin_spec("coffee-cnn")  # 224 x 224 x 3, 4 classes


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's own cache folder; returns where converted data sets go."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinyrobust" / "data"


def cifar_batch(count: int, first: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A batch file's bytes for records numbered from first (each with its own label and pixels), with the
    images (count, 32, 32, 3) and labels it must load as."""
    numbers = np.arange(first, first + count)
    labels = (numbers * 3 % 10).astype(np.uint8)
    k = np.arange(3072)[None, :]  # byte k of the planes: red 0-1023, green 1024-2047, blue 2048-3071
    planes = ((numbers[:, None] * 7 + k + 50 * (k // 1024)) % 256).astype(np.uint8)
    blob = np.concatenate([labels[:, None], planes], axis=1).tobytes()
    return blob, planes.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1), labels


def write_cifar(folder, per_batch=2, test=3):
    """A cifar-10-batches-bin folder as distributed, with a few records per batch file; returns the uint8
    (x_train, y_train, x_test, y_test) it holds."""
    folder.mkdir(parents=True)
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    xs, ys = [], []
    for i, name in enumerate(datasets.CIFAR_TRAIN):
        blob, x, y = cifar_batch(per_batch, i * per_batch)
        (folder / name).write_bytes(blob)
        xs.append(x)
        ys.append(y)
    blob, x_test, y_test = cifar_batch(test, 100)
    (folder / datasets.CIFAR_TEST).write_bytes(blob)
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


def write_images(folder, classes, per_class=3, size=(12, 6)) -> dict[str, list[tuple[int, int, int]]]:
    """PNGs of one RGB colour each in folder/<class>/00.png, 01.png, ...; returns each class's colours."""
    colours = {}
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        colours[name] = [(40 * c + 10 * i, 200 - 30 * i, 17 * c + 5) for i in range(per_class)]
        for i, colour in enumerate(colours[name]):
            Image.new("RGB", size, colour).save(folder / name / f"{i:02d}.png")
    return colours


def filled(colours: list, shape: tuple[int, ...]) -> np.ndarray:
    """Images of shape, each filled with one colour (a value per channel), as pixels / 255."""
    return np.array(colours, np.float32).reshape(len(colours), 1, 1, -1) * np.ones(shape, np.float32) / 255.0


def luma(r: int, g: int, b: int) -> int:
    """Pillow's grayscale of an RGB colour (ITU-R 601-2, rounded in 16-bit fixed point)."""
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def test_cifar_folder_and_tar_gz_load_as_pixels_over_255_with_the_test_batch_as_test(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    x_train, y_train, x_test, y_test = write_cifar(folder)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")

    for source in (folder, tmp_path, archive):  # the batches' folder, the folder it is in, the archive as distributed
        loaded = zoo.load_data(source, CIFAR)
        assert [a.dtype for a in loaded] == [np.float32, np.int64, np.float32, np.int64]
        assert [a.shape for a in loaded] == [(10, 32, 32, 3), (10,), (3, 32, 32, 3), (3,)]
        assert np.array_equal(loaded[0], x_train / np.float32(255))
        assert np.array_equal(loaded[1], y_train) and np.array_equal(loaded[3], y_test)
        assert np.array_equal(loaded[2], x_test / np.float32(255))
    # Channels last: record 1's pixel (0, 1) has bytes 1, 1025 and 2049 of its planes, 8, 58 and 108.
    assert [round(float(v) * 255) for v in loaded[0][1, 0, 1]] == [8, 58, 108]
    assert list(loaded[1][:4]) == [0, 3, 6, 9]


def test_cifar_is_resized_and_made_grayscale_for_a_model_of_another_shape(tmp_path):
    x_train, _, x_test, _ = write_cifar(tmp_path / "cifar")
    loaded = zoo.load_data(tmp_path / "cifar", DIGITS)
    assert loaded[0].shape == (10, 8, 8, 1) and loaded[2].shape == (3, 8, 8, 1)
    for x, original in ((loaded[0][4], x_train[4]), (loaded[2][2], x_test[2])):
        expected = Image.fromarray(original).convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        assert np.array_equal(x[:, :, 0], np.asarray(expected) / np.float32(255))


def test_image_folder_is_resized_labelled_by_sorted_class_names_and_split_with_the_models_seed(tmp_path):
    colours = write_images(tmp_path / "leaves", ("rust", "healthy", "miner", "phoma"), per_class=4)
    x_train, y_train, x_test, y_test = zoo.load_data(tmp_path / "leaves", COFFEE)

    # Labels by sorted class name: healthy 0, miner 1, phoma 2, rust 3; images by class, then file name.
    in_order = [colour for name in sorted(colours) for colour in colours[name]]
    expected = train_test_split(filled(in_order, (224, 224, 3)), np.repeat(np.arange(4), 4),
                                test_size=COFFEE["training"]["test_fraction"], random_state=COFFEE["seed"])  # fmt: skip
    assert x_train.shape == (12, 224, 224, 3) and x_test.shape == (4, 224, 224, 3)
    for got, want in zip((x_train, x_test, y_train, y_test), expected, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_images_become_grayscale_of_the_models_height_and_width(tmp_path):
    colours = write_images(tmp_path / "images", ("a", "b"), per_class=5, size=(13, 7))
    x_train, y_train, x_test, y_test = zoo.load_data(tmp_path / "images", DIGITS)
    x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    assert x.shape == (10, 8, 8, 1)
    gray = {label: [luma(*c) for c in colours[name]] for label, name in enumerate(("a", "b"))}
    for image, label in zip(x, y, strict=True):
        assert np.all(image == image[0, 0, 0]) and round(float(image[0, 0, 0]) * 255) in gray[label]
    assert sorted(round(float(v) * 255) for v in x[:, 0, 0, 0]) == sorted(gray[0] + gray[1])


def test_train_and_test_folders_are_used_as_they_are(tmp_path):
    train = write_images(tmp_path / "vww" / "train", ("person", "non_person"), per_class=3)
    test = write_images(tmp_path / "vww" / "test", ("person", "non_person"), per_class=2)
    x_train, y_train, x_test, y_test = zoo.load_data(tmp_path / "vww", zoo.builtin_spec("mobilenetv1-vww"))
    assert np.array_equal(x_train, filled(train["non_person"] + train["person"], (96, 96, 3)))
    assert np.array_equal(x_test, filled(test["non_person"] + test["person"], (96, 96, 3)))
    assert list(y_train) == [0, 0, 0, 1, 1, 1] and list(y_test) == [0, 0, 1, 1]

    (tmp_path / "vww" / "test" / "non_person").rename(tmp_path / "vww" / "test" / "nobody")
    with pytest.raises(UserError, match="test has classes nobody, person and .*train has non_person, person; give"):
        zoo.load_data(tmp_path / "vww", zoo.builtin_spec("mobilenetv1-vww"))


def test_a_converted_data_set_is_cached_by_its_files_and_the_shape(tmp_path, cache, monkeypatch):
    write_images(tmp_path / "images", ("a", "b", "c"), per_class=3)
    first = zoo.load_data(tmp_path / "images", DIGITS)
    assert len(list(cache.glob("images-*.npz"))) == 1

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(datasets, "_convert", no_conversion)
    second = zoo.load_data(tmp_path / "images", DIGITS)
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # Another shape or another file in the folder is another data set.
    with pytest.raises(AssertionError, match="converted again"):
        zoo.load_data(tmp_path / "images", COFFEE)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a" / "new.png")
    with pytest.raises(AssertionError, match="converted again"):
        zoo.load_data(tmp_path / "images", DIGITS)


def test_the_data_tag_of_a_models_cache_names_the_source_and_the_shape(tmp_path):
    write_images(tmp_path / "images", ("a", "b"), per_class=4)
    key = datasets.source_key(tmp_path / "images", (8, 8, 1))
    assert zoo.data_tag(tmp_path / "images", DIGITS) == f"-data-{key[:12]}"
    assert datasets.read(tmp_path / "images", (8, 8, 1), tmp_path / "c").key == key
    assert key != datasets.source_key(tmp_path / "images", (8, 8, 3))


def test_a_user_model_takes_the_test_part_or_every_image_at_its_input_shape(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(quantized_model([keras.layers.Flatten(), keras.layers.Dense(2)], (5, 6, 3)))
    colours = write_images(tmp_path / "all", ("no", "yes"), per_class=2)
    loaded = zoo.load_user(model, None, tmp_path / "all")
    assert np.array_equal(loaded.x_test, filled(colours["no"] + colours["yes"], (5, 6, 3)))
    assert list(loaded.y_test) == [0, 0, 1, 1]

    write_images(tmp_path / "split" / "train", ("no", "yes"), per_class=2)
    test = write_images(tmp_path / "split" / "test", ("no", "yes"), per_class=1)
    loaded = zoo.load_user(model, None, tmp_path / "split")
    assert np.array_equal(loaded.x_test, filled(test["no"] + test["yes"], (5, 6, 3)))


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda root: root / "absent", ["absent does not exist; put CIFAR-10's binary version", "there"]),
        (lambda root: root, ["has no class folders; put each class's images in a sub-folder named after the class"]),
        (lambda root: (root / "a").mkdir() or root, ["class folder", "holds no images"]),
        (lambda root: (root / "x.zip").write_bytes(b"PK") and root / "x.zip", ["x.zip is not a data set"]),
        (lambda root: (root / "x.tar.gz").write_bytes(b"no") and root / "x.tar.gz", ["x.tar.gz is not a readable"]),
    ],
    ids=["missing", "no class folders", "empty class folder", "unknown file", "broken archive"],
)
def test_unreadable_data_is_one_sentence_saying_what_is_wrong(tmp_path, make, fragments):
    root = tmp_path / "data"
    root.mkdir()
    (root / "stray.png").write_bytes(b"")  # an image outside any class folder is not a class
    with pytest.raises(UserError) as error:
        zoo.load_data(make(root), CIFAR)
    message = str(error.value)
    assert "\n" not in message and ". " not in message
    for fragment in fragments:
        assert fragment in message


def test_a_truncated_or_incomplete_cifar_distribution_is_named_with_its_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar(folder)
    blob = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(blob[:-100])
    with pytest.raises(UserError, match=r"data_batch_3.bin in .* is truncated or not a CIFAR-10 batch \(6046 bytes"):
        zoo.load_data(folder, CIFAR)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    with pytest.raises(UserError, match="data_batch_3.bin in .*cifar-10-binary.tar.gz is truncated"):
        zoo.load_data(archive, CIFAR)

    (folder / "data_batch_3.bin").write_bytes(blob)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(UserError, match="lacks CIFAR-10's test_batch.bin; it needs data_batch_1.bin to"):
        zoo.load_data(folder, CIFAR)


def test_an_unreadable_image_is_named(tmp_path):
    write_images(tmp_path / "images", ("a", "b"), per_class=2)
    (tmp_path / "images" / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"cannot read .*broken.jpg as an image .*; replace or remove it"):
        zoo.load_data(tmp_path / "images", DIGITS)


def test_images_for_a_model_that_does_not_take_images_are_refused(tmp_path):
    write_images(tmp_path / "images", ("a", "b"), per_class=2)
    with pytest.raises(UserError, match=r"inputs are of shape \(640,\), not \(height, width, 1 or 3 channels\)"):
        zoo.load_data(tmp_path / "images", zoo.builtin_spec("fc-autoencoder-ad"))


@pytest.mark.emulator
def test_flash_and_evaluate_trains_digits_cnn_on_an_image_folder(tmp_path):
    """Three classes of noisy colour patterns, converted to 8 x 8 grayscale, trained on, quantized and run."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("circle", "cross", "square")):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for i in range(4):
            base = np.full((16, 16, 3), 60 * c + 20, np.uint8)
            noise = rng.integers(0, 40, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(tmp_path / "shapes" / name / f"{i}.png")
    out = tmp_path / "run"
    result = tinyrobust("flash-and-evaluate", "--data", tmp_path / "shapes", "--samples", 3, "--attacks", "fgsm",
                        "--eps", "0.1", "--out", out, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert [(r["attack"], r["samples"]) for r in results["runs"]] == [("none", 3), ("fgsm", 3)]
    assert all(r["agreement"]["device_vs_tflm_bit_exact"] == 1.0 for r in results["runs"])
    assert len(list((tmp_path / "cache" / "tinyrobust" / "data").glob("images-*.npz"))) == 1
