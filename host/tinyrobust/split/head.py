"""The split network's device-side head as a .tflite whose integer output is the latent's symbols."""

from __future__ import annotations

from tinyrobust.errors import UserError

# Operators whose kernels requantize to whatever output scale the model gives (TFLM computes the multiplier in
# Prepare), and those that move integers through unchanged, so the tensor they read must carry the same scale.
REQUANTIZING = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL", "MEAN",
                "QUANTIZE"}  # fmt: skip
PASSTHROUGH = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def with_symbol_output(tflite: bytes) -> bytes:
    """The model with its output tensor requantized to scale 1 and zero point 0, so that its integers are the
    rounded float outputs (saturated at the type's range): the latent's symbols. A RESHAPE (or SQUEEZE,
    EXPAND_DIMS) at the end moves integers unchanged, so the tensor it reads is rescaled too, back to the
    operator that requantizes."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if len(model.subgraphs) != 1 or len(model.subgraphs[0].outputs) != 1:
        raise UserError("a split head must have one subgraph with one output, the latent")
    sub = model.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    producers = {int(t): op for op in sub.operators or [] for t in op.outputs}
    readers: dict[int, int] = {}  # of the tensor's integers: SHAPE reads only its shape (a dynamic batch's RESHAPE)
    for op in sub.operators or []:
        for t in op.inputs if kind(op) != "SHAPE" else []:
            readers[int(t)] = readers.get(int(t), 0) + 1

    tensor = int(sub.outputs[0])
    while True:
        quantization = sub.tensors[tensor].quantization
        if quantization is None or quantization.scale is None or len(quantization.scale) != 1:
            raise UserError("the head's output is not quantized per tensor; quantize the head fully to int8")
        quantization.scale, quantization.zeroPoint = [1.0], [0]
        quantization.min = quantization.max = None  # the float range the converter saw no longer applies
        op = producers.get(tensor)
        if op is None:
            raise UserError("the head's output is its input; a split head needs at least one layer")
        if kind(op) in REQUANTIZING:
            break
        source = int(op.inputs[0])
        if kind(op) not in PASSTHROUGH or readers.get(source, 0) != 1:
            raise UserError(
                f"the head's output comes from {kind(op)}, which cannot give it scale 1; end the head with a "
                "convolution, a dense layer or an addition (optionally reshaped)"
            )
        tensor = source

    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
