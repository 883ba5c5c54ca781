"""C rendering of a compiled model: the names and C types of its constants, C initializers, and model.h and
model.c from their templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tinyrobust.compile.model import CompiledModel, Step
    from tinyrobust.split.coder import Coding, HyperpriorCoding

# Name prefixes by which the memory report counts constants apart from code: the model's weights and biases,
# the per-channel requantization multipliers and shifts, and a split build's coder tables and table indexes.
WEIGHTS_PREFIX, QUANT_PARAMS_PREFIX, CODING_PREFIX = "tr_w_", "tr_q_", "tr_c_"
# C element types of the tensor types the generated code declares.
C_TYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t"}


@dataclass
class Constant:
    """A constant C array of the generated model.c."""

    name: str
    ctype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.values.size * np.dtype(self.ctype[:-2]).itemsize  # int8_t .. int64_t, uint16_t

    @property
    def weight(self) -> bool:
        return self.name.startswith(WEIGHTS_PREFIX)


def operand_name(tensor: int) -> str:
    """The C array of a constant kernel operand."""
    return f"{WEIGHTS_PREFIX}t{tensor}"


def c_list(values) -> str:
    """A C initializer list."""
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def c_struct(fields: dict[str, object]) -> str:
    """A C struct initializer with designated fields."""
    return "{" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}"


def c_array(values: np.ndarray, per_line: int = 24) -> str:
    """The elements of a C array initializer, per_line to a line."""
    items = [str(int(v)) for v in values.reshape(-1)]
    return ",\n    ".join(", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line))


def render(model: CompiledModel, out_dir: Path) -> list[Path]:
    """Write model.h and model.c for the compiled model."""

    def pointer(t: int) -> str:
        """A tensor in the byte arena as a pointer to its elements."""
        return f"({model.element_types.get(t, 'int8_t')} *)(arena + {model.offsets[t]})"

    def operand(t: int) -> str:
        return pointer(t) if t in model.offsets else operand_name(t)

    def arguments(step: Step) -> str:
        reads = ", ".join(operand(t) for t in step.inputs)
        return f"(const void *const[]){{{reads}}}" if step.variadic else reads

    output_bytes = {b.key: b.size for b in model.buffers}  # a step's output always owns its buffer
    context = {
        "model": model,
        "c_array": c_array,
        "arguments": arguments,
        "pointer": pointer,
        "output_bytes": output_bytes,
    }
    return _write(out_dir, ("model.h", "model.c"), context)


def _write(out_dir: Path, names: tuple[str, ...], context: dict) -> list[Path]:
    """Each template name.j2 rendered with the context into out_dir/name."""
    from tinyrobust.templates import render_template

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in names]
    for path in paths:
        path.write_text(render_template(f"{path.name}.j2", **context))
    return paths


def render_coding(model: CompiledModel, coding: Coding | HyperpriorCoding, out_dir: Path) -> list[Path]:
    """Write coding.h and coding.c for a split build: the coder's tables, table indexes and (for a hyperprior)
    the lookup tables of the means and scales as constants in flash, the stream buffer's worst-case size, and
    tr_coding_encode, which codes the head's outputs."""
    from tinyrobust.split.coder import HyperpriorCoding, c_tables

    y = model.outputs[0]
    context = {
        "symbols": int(np.prod(y.shape, dtype=np.int64)),
        "symbol_bytes": y.dtype.itemsize,
        "prefix": CODING_PREFIX,
    }
    if isinstance(coding, HyperpriorCoding):
        z = model.outputs[1]
        context |= {
            "entropy_model": "hyperprior",
            "stream_bytes": coding.max_stream_bytes(y.shape, z.shape),
            # One array of tables on the device: z's, then the Gaussian ones, which the scale lookup points past z's.
            "tables": c_tables(coding.z.tables + coding.gaussian, f"{CODING_PREFIX}tables"),
            "z_symbols": int(np.prod(z.shape, dtype=np.int64)),
            "z_indexes": c_array(coding.z.indexes(z.shape)),
            "channels": y.shape[-1],
            "means": c_array(coding.means),
            "scales": c_array(coding.scales.astype(np.int64) + len(coding.z.tables)),
        }
    else:
        context |= {
            "entropy_model": "factorized",
            "stream_bytes": coding.max_stream_bytes(y.shape, y.dtype),
            "tables": c_tables(coding.tables, f"{CODING_PREFIX}tables"),
            "indexes": c_array(coding.indexes(y.shape)),
        }
    return _write(out_dir, ("coding.h", "coding.c"), context)


def render_smoothing(model: CompiledModel, out_dir: Path) -> list[Path]:
    """Write smoothing.h and smoothing.c for a smoothing build: the noise table and the generator's starting state
    as constants, and tr_smoothing_vote, which runs the network on the noisy copies of an input and counts votes."""
    from tinyrobust.compile.smoothing import initial_state, noise_table

    s, x, y = model.smoothing, model.input, model.output
    table = noise_table(s.sigma, x)
    suffix = {"int8": "s8", "int16": "s16"}
    context = {
        "n": s.n,
        "classes": int(np.prod(y.shape[1:])),
        "sigma": f"{s.sigma:g}",
        "scale": f"{float(x.scale[0]):.6g}",
        "steps": f"{s.sigma / float(x.scale[0]):.4g}",
        "table": table,
        "table_ctype": C_TYPES[str(table.dtype)],
        "c_array": c_array,
        "size": int(np.prod(x.shape[1:])),
        "state": initial_state(s.seed),
        "in_type": suffix[x.type_name],
        "in_ctype": C_TYPES[x.type_name],
        "out_type": suffix[y.type_name],
        "out_ctype": C_TYPES[y.type_name],
    }
    return _write(out_dir, ("smoothing.h", "smoothing.c"), context)
