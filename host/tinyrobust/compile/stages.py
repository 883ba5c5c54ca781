"""Device pre-processing stages: input defenses the device runs on the quantized int8 input before the network.

A stage is defined once, in STAGES: its name and parameters (with their allowed values and the parameter of
the defense each comes from), its kernel and parameter struct, and a numpy reference that the C kernel equals
byte for byte. compile_model lowers the stages into the schedule's first steps; the campaign runs the reference
to know what the network sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinyrobust.compile.graph import Graph, Op, Tensor, reindex
from tinyrobust.compile.lower import Kernel
from tinyrobust.errors import UserError


def squeeze_bits_q(xq: np.ndarray, bits: int) -> np.ndarray:
    """Bit-depth squeezing of int8 values over the whole int8 range: u = q + 128 in [0, 255] is rounded to the
    nearest of 2^bits evenly spaced levels, level = round(u * L / 255) with L = 2^bits - 1, and mapped back,
    round(level * 255 / L) - 128, both roundings half up. 255 and L are odd, so neither ever meets a tie: on an
    input quantized with scale 1/255 and zero point -128 this is ART's FeatureSqueezing on [0, 1], exactly."""
    levels = (1 << bits) - 1
    u = xq.astype(np.int32) + 128
    level = (2 * u * levels + 255) // 510
    return ((2 * level * 255 + levels) // (2 * levels) - 128).astype(np.int8)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """scipy.ndimage's "reflect" mode (d c b a | a b c d | d c b a) for any offset: period 2n."""
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def median_q(xq: np.ndarray, k: int) -> np.ndarray:
    """Median over a k x k window of each channel of (N, H, W, C) values, as scipy.ndimage.median_filter with
    size (1, k, k, 1), mode "reflect", origin 0 (ART's SpatialSmoothing): the window starts k // 2 before the
    element, and for an even k*k the value of rank k*k // 2 (the upper median) is taken."""
    n, h, w, c = xq.shape
    rows = _reflect(np.arange(h)[:, None] + np.arange(k)[None, :] - k // 2, h)  # (h, k)
    cols = _reflect(np.arange(w)[:, None] + np.arange(k)[None, :] - k // 2, w)  # (w, k)
    windows = xq[:, rows[:, None, :, None], cols[None, :, None, :], :]  # (n, h, w, k, k, c)
    windows = np.sort(windows.reshape(n, h, w, k * k, c), axis=3)
    return windows[:, :, :, (k * k) // 2, :]


def _squeeze_bits_fields(x: Tensor, bits: int) -> dict[str, object]:
    return {"size": int(np.prod(x.shape)), "levels": (1 << bits) - 1}


def _median_fields(x: Tensor, k: int) -> dict[str, object]:
    if len(x.shape) != 4:
        raise UserError(f"the median stage needs an image input (1, H, W, C), not shape {x.shape}")
    return {"in_h": x.shape[1], "in_w": x.shape[2], "in_c": x.shape[3], "k": k}


@dataclass(frozen=True)
class Stage:
    """A device pre-processing stage: everything the compiler, the defenses and the campaign need of it."""

    name: str
    params: dict[str, range]  # parameter -> allowed values
    defense_params: dict[str, str]  # parameter -> the defense parameter that gives its value
    function: str  # the C kernel
    struct: str  # its parameter struct
    fields: Callable[..., dict[str, object]]  # (input tensor, **params) -> the struct's fields
    reference: Callable[..., np.ndarray]  # (int8 inputs (N, ...), **params) -> what the kernel writes


STAGES = {
    s.name: s
    for s in (
        Stage("squeeze_bits", {"bits": range(1, 9)}, {"bits": "bit_depth"}, "tr_squeeze_bits_s8",
              "tr_squeeze_bits_params", _squeeze_bits_fields, squeeze_bits_q),
        Stage("median", {"k": range(1, 8)}, {"k": "window_size"}, "tr_median_s8",  # k up to TR_MEDIAN_MAX_K
              "tr_median_params", _median_fields, median_q),
    )
}  # fmt: skip


def from_defense(names: tuple[str, ...], defense_params: dict) -> list[dict]:
    """The stages of the given names with their parameters taken from a defense's parameters."""
    return [
        {"stage": name, **{p: int(defense_params[d]) for p, d in STAGES[name].defense_params.items()}} for name in names
    ]


def canonical(stages: list[dict]) -> list[dict]:
    """The stages with their parameters checked, in one canonical form (the model hash covers it)."""
    result = []
    for stage in stages:
        name = stage.get("stage")
        if name not in STAGES:
            raise UserError(f"there is no device pre-processing stage '{name}'; choose from: {', '.join(STAGES)}")
        allowed = STAGES[name].params
        params = {k: v for k, v in stage.items() if k != "stage"}
        if set(params) != set(allowed) or any(not isinstance(v, int) or v not in allowed[k] for k, v in params.items()):
            wanted = ", ".join(f"{k} in {r.start}..{r.stop - 1}" for k, r in allowed.items())
            raise UserError(f"pre-processing stage {name} takes {wanted}, not {params}")
        result.append({"stage": name, **{k: int(params[k]) for k in sorted(allowed)}})
    return result


def apply_stages_q(xq: np.ndarray, stages: list[dict]) -> np.ndarray:
    """The stages on int8 inputs, in the numpy reference: what the network then reads."""
    for stage in stages:
        xq = STAGES[stage["stage"]].reference(xq, **{k: v for k, v in stage.items() if k != "stage"})
    return xq


def lower_stages(graph: Graph, stages: list[dict]) -> list[tuple[Op, Kernel]]:
    """The stages as the schedule's first ops, each writing a new int8 tensor shaped like the input; the network
    then reads the last one. The planner gives the new tensors arena space like any activation."""
    x = graph.tensors[graph.inputs[0]]
    if x.type_name != "int8":
        raise UserError(f"device pre-processing runs on int8 inputs; this model's input is {x.type_name}")
    lowered, source = [], x.index
    for i, stage in enumerate(stages):
        s = STAGES[stage["stage"]]
        fields = s.fields(x, **{k: v for k, v in stage.items() if k != "stage"})
        out = Tensor(len(graph.tensors), f"preprocess{i}_{s.name}", x.shape, "int8", x.scale, x.zero_point)
        graph.tensors.append(out)
        op = Op(-1, f"PREPROCESS_{s.name.upper()}", [source], [out.index])
        lowered.append((op, Kernel(s.function, s.struct, fields, inputs=[source])))
        source = out.index
    for op in graph.ops:
        op.inputs = [source if t == x.index else t for t in op.inputs]
    reindex(graph)
    return lowered
