"""Randomized smoothing on the device (Cohen et al. 2019): the firmware runs the network on n noisy copies of each
input and answers with the votes, how many copies it gave each class.

The noise is made here at compile time as far as it can be: a table of 2^TABLE_BITS Gaussian values in input
quantization steps (the inverse CDF at equal slices of probability, scaled by sigma / the input's scale). The
device only steps a xorshift32 generator, restarted from the seed at every input, looks each state's top bits up
in the table and adds the value to the input element, saturated. noisy_copies and votes are the numpy reference
the device equals bit for bit, so the host's TFLM and TFLite vote on the very copies the device makes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tinyrobust.compile.graph import Tensor
from tinyrobust.errors import UserError

TABLE_BITS = 10  # the noise table has 2^10 entries, looked up by the top 10 bits of each generator state
VOTES_TYPE = "uint16"  # a vote count per class: at most MAX_COPIES copies
MAX_COPIES = int(np.iinfo(np.uint16).max)
MAX_SEED = (1 << 32) - 2  # seed + 1 is a nonzero 32-bit state (initial_state)


@dataclass(frozen=True)
class Smoothing:
    """A smoothing build's parameters: the noise std in the model's float input units, the copies per input, the
    generator's seed, and the confidence of the certificate (host only: the device does not use it)."""

    sigma: float
    n: int
    seed: int = 0
    alpha: float = 0.001

    def __post_init__(self):
        number = (int, float)
        if not isinstance(self.sigma, number) or isinstance(self.sigma, bool) or not self.sigma > 0:
            raise UserError(f"randomized-smoothing's sigma must be a positive number (the noise's standard "
                            f"deviation in the model's input units), not {self.sigma!r}")  # fmt: skip
        if not _whole(self.n) or not 1 <= self.n <= MAX_COPIES:
            raise UserError(f"randomized-smoothing's n must be a whole number from 1 to {MAX_COPIES} (the votes are "
                            f"16-bit counts), not {self.n!r}")  # fmt: skip
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"randomized-smoothing's seed must be a whole number from 0 to {MAX_SEED}, "
                            f"not {self.seed!r}")  # fmt: skip
        if not isinstance(self.alpha, number) or isinstance(self.alpha, bool) or not 0 < self.alpha < 1:
            raise UserError(f"randomized-smoothing's alpha must be a number between 0 and 1 (exclusive), "
                            f"not {self.alpha!r}")  # fmt: skip

    def device(self) -> dict:
        """What the firmware runs, for the model hash (alpha only changes what the host makes of the votes)."""
        return {"sigma": float(self.sigma), "n": int(self.n), "seed": int(self.seed)}

    def hash_bytes(self) -> bytes:
        return b"\0tinyrobust-smoothing\0" + json.dumps(self.device(), sort_keys=True).encode()


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def votes_tensor(output: Tensor, smoothing: Smoothing) -> Tensor:
    """What a smoothing build answers with in place of the network's output: a uint16 count per class, as a tensor
    of scale 1 / n, so that dequantized votes are each class's share of the copies."""
    classes = int(np.prod(output.shape[1:]))
    return Tensor(-1, "votes", (1, classes), VOTES_TYPE, np.array([1.0 / smoothing.n], np.float32), np.array([0]))


def initial_state(seed: int) -> int:
    """The generator's state at the start of every input: seed + 1 through MurmurHash3's fmix32, a bijection of the
    32-bit integers that maps 0 alone to 0, so that no seed gives xorshift32 its stuck state 0 and neighbouring
    seeds do not start on neighbouring states (whose first outputs are alike)."""
    h = (seed + 1) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


@lru_cache(maxsize=4)
def xorshift32(state: int, count: int) -> np.ndarray:
    """The count states after state of Marsaglia's xorshift32 (13, 17, 5), as the device's tr_xorshift32 steps."""
    states = np.empty(count, np.uint32)
    x = state
    for i in range(count):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        states[i] = x
    states.flags.writeable = False
    return states


def noise_table(sigma: float, tensor: Tensor) -> np.ndarray:
    """The device's noise values in the input's quantization steps: N(0, sigma / scale) at the middle of each of
    2^TABLE_BITS equal slices of probability (the inverse CDF at (i + 0.5) / 2^TABLE_BITS), rounded to whole steps
    and limited to the input type's span (a larger value saturates the same). int16 for an int8 input, int32 for
    an int16 one."""
    from scipy.stats import norm

    entries = 1 << TABLE_BITS
    info = np.iinfo(tensor.dtype)
    span = int(info.max) - int(info.min)
    values = np.round(norm.ppf((np.arange(entries) + 0.5) / entries) * (sigma / float(tensor.scale[0])))
    return np.clip(values, -span, span).astype(np.int16 if tensor.dtype == np.int8 else np.int32)


def noise(smoothing: Smoothing, tensor: Tensor) -> np.ndarray:
    """The noise of the n copies of any input, (n, input elements) in steps: the same for every input, since the
    generator restarts from the seed at each one."""
    size = int(np.prod(tensor.shape[1:]))
    states = xorshift32(initial_state(smoothing.seed), smoothing.n * size)
    table = noise_table(smoothing.sigma, tensor).astype(np.int32)
    return table[states >> (32 - TABLE_BITS)].reshape(smoothing.n, size)


def noisy_copies(xq: np.ndarray, smoothing: Smoothing, tensor: Tensor) -> np.ndarray:
    """The copies the device runs the network on, (inputs * n, ...) input after input: each element plus its
    noise, saturated to the input type."""
    info = np.iinfo(tensor.dtype)
    flat = xq.reshape(len(xq), 1, -1).astype(np.int32)
    copies = np.clip(flat + noise(smoothing, tensor)[None], info.min, info.max).astype(tensor.dtype)
    return copies.reshape((len(xq) * smoothing.n, *xq.shape[1:]))


def votes(outputs: np.ndarray, n: int) -> np.ndarray:
    """Per input, how many of its n copies' outputs (rows of outputs, input after input) have each class on top
    (the first of equal largest values, as the device's tr_argmax): (inputs, classes) uint16 counts."""
    outputs = outputs.reshape(-1, n, outputs.shape[-1])
    top = outputs.argmax(axis=2)
    counts = np.zeros((len(outputs), outputs.shape[-1]), np.uint16)
    np.add.at(counts, (np.arange(len(outputs))[:, None], top), 1)
    return counts
