"""The built-in default ships trained: the zoo takes its files as they are (checked against the manifest), and the
default job run on them gives the committed benchmark's figures."""

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import keras
import pytest

from conftest import TINYROBUST, tinyrobust
from tinyrobust.errors import UserError
from tinyrobust.model import shipped, zoo

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "results" / "default_job.json"
ENGINES = ("float", "tflite", "tflm", "device")


@pytest.fixture
def shipped_copy(tmp_path):
    """A copy of the shipped trained folder, to damage."""
    folder = tmp_path / "trained"
    shutil.copytree(shipped.FOLDER / "digits-cnn", folder / "digits-cnn")
    return folder


def test_digits_cnn_ships_trained_from_its_current_spec():
    manifest = tomllib.loads((shipped.FOLDER / "digits-cnn" / shipped.MANIFEST).read_text())
    assert manifest["spec_sha256"] == shipped.spec_sha256("digits-cnn")
    assert set(manifest["files"]) == set(shipped.FILES)
    assert shipped.find("digits-cnn") == shipped.FOLDER / "digits-cnn"


def test_the_zoo_uses_the_shipped_files_without_training_or_caching(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_training(*args, **kwargs):
        raise AssertionError("digits-cnn was trained although it ships trained")

    monkeypatch.setattr(zoo, "train_keras", no_training)
    for precision in ("int8", "int16x8"):
        model = zoo.load_builtin("digits-cnn", precision)
        assert model.tflite == (shipped.FOLDER / "digits-cnn" / f"{precision}.tflite").read_bytes()
    assert not (tmp_path / "cache").exists()


def test_the_shipped_float_model_loads_in_keras_safe_mode():
    model = keras.models.load_model(shipped.FOLDER / "digits-cnn" / "float.keras", compile=False, safe_mode=True)
    assert model.input_shape[1:] == tuple(zoo.builtin_spec("digits-cnn")["input_shape"])


@pytest.mark.parametrize("file", shipped.FILES)
def test_a_corrupted_shipped_file_is_refused_in_one_sentence(shipped_copy, file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = shipped_copy / "digits-cnn" / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as error:
        zoo.load_builtin("digits-cnn", shipped_folder=shipped_copy)
    message = str(error.value)
    assert str(path) in message and "SHA-256" in message and "--retrain digits-cnn" in message
    assert message.count(";") == 1 and "\n" not in message
    assert not (tmp_path / "cache").exists()


def test_a_missing_shipped_file_is_refused_in_one_sentence(shipped_copy):
    (shipped_copy / "digits-cnn" / "int16x8.tflite").unlink()
    with pytest.raises(UserError, match="int16x8.tflite is missing or does not match its SHA-256"):
        zoo.load_builtin("digits-cnn", "int16x8", shipped_folder=shipped_copy)


def test_files_shipped_for_another_spec_are_not_used(shipped_copy):
    manifest = shipped_copy / "digits-cnn" / shipped.MANIFEST
    manifest.write_text(manifest.read_text().replace(shipped.spec_sha256("digits-cnn"), "0" * 64))
    assert shipped.find("digits-cnn", shipped_copy) is None


def test_retraining_an_unknown_model_is_one_sentence():
    result = tinyrobust("models", "--retrain", "nope")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: there is no built-in model 'nope'; choose one of: {', '.join(zoo.builtin_names())}"
    ]


@pytest.mark.slow
def test_retraining_writes_files_and_a_manifest_the_zoo_accepts(tmp_path):
    folder = shipped.retrain("digits-cnn", tmp_path / "trained")
    assert folder == tmp_path / "trained" / "digits-cnn"
    assert shipped.find("digits-cnn", tmp_path / "trained") == folder
    manifest = tomllib.loads((folder / shipped.MANIFEST).read_text())
    assert manifest["tensorflow"] and manifest["tinyrobust"]
    keras.models.load_model(folder / "float.keras", compile=False, safe_mode=True)


@pytest.mark.emulator
def test_the_default_job_on_an_empty_cache_gives_the_committed_benchmark_figures(tmp_path):
    """The README quotes benchmarks/results/default_job.json: a fresh run of the default job (clean and FGSM; the
    samples do not depend on the attacks run) must give its figures to the last digit."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    subprocess.run([*TINYROBUST, "flash-and-evaluate", "--attacks", "fgsm", "--out", str(tmp_path / "out")],
                   env=env, check=True, capture_output=True, timeout=600)  # fmt: skip
    fresh = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    committed = json.loads(BENCHMARK.read_text())["runs"]
    expected = {(r["attack"], r["eps"]): {e: r[e] for e in ENGINES} for r in committed if r["attack"] != "pgd"}
    assert {(r["attack"], r["eps"]): {e: r["accuracy"][e] for e in ENGINES} for r in fresh} == expected
    assert not (tmp_path / "cache" / "tinyrobust" / "models").exists()
