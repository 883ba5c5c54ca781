import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*PyTorch not found.*")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items) -> None:
    """Every test that runs the emulator is slow: `pytest -m "not slow"` is the fast lane."""
    for item in items:
        if item.get_closest_marker("emulator") is not None:
            item.add_marker(pytest.mark.slow)


def interruptible() -> None:
    """Popen's preexec_fn for a child that a test stops with SIGINT: the default disposition, so that Python
    raises KeyboardInterrupt even when the tests run where SIGINT is ignored (a background job's children)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The command as a user runs it, through the interpreter that runs the tests, so that no other tinyrobust on PATH
# can stand in for the one under test.
TINYROBUST = [sys.executable, "-m", "tinyrobust"]


def tinyrobust(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the command line and capture what it prints."""
    return subprocess.run([*TINYROBUST, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def quantized_model(layers, input_shape, seed=0, precision="int8", batch_size=None) -> bytes:
    """A Keras model of the given layers with random weights, quantized with a random representative set;
    batch_size=1 fixes the batch dimension, which changes what the converter emits for some layers."""
    import keras

    from tinyrobust.model.quantize import quantize

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=input_shape, batch_size=batch_size), *layers])
    # Random biases too, so that bias handling is exercised (Keras initializes them to zero).
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.default_rng(seed).normal(0, 0.3, layer.bias.shape))
    representative = np.random.default_rng(seed).uniform(-1, 1, (64, *input_shape)).astype(np.float32)
    return quantize(model, representative, precision)


def random_inputs(tflite: bytes, count: int, seed: int = 1) -> np.ndarray:
    from tinyrobust.compile.graph import read_tflite

    graph = read_tflite(tflite)
    shape = graph.tensors[graph.inputs[0]].shape
    return np.random.default_rng(seed).integers(-128, 128, (count, *shape[1:])).astype(np.int8)


@pytest.fixture(scope="session")
def digits():
    """The built-in digits-cnn model (trained once, cached)."""
    from tinyrobust.model import zoo

    return zoo.load_builtin("digits-cnn")
