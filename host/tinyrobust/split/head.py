"""The split network's device-side head as a .tflite whose integer output is the latent's symbols."""

from __future__ import annotations

from tinyrobust.errors import UserError

# Operators whose kernels requantize to whatever output scale the model gives (TFLM computes the multiplier in
# Prepare), and those that move integers through unchanged, so the tensor they read must carry the same scale.
REQUANTIZING = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL", "MEAN",
                "QUANTIZE"}  # fmt: skip
PASSTHROUGH = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
# Operators that move integers through unchanged when they read a symbol tensor: their output takes its scale.
READS_THROUGH = PASSTHROUGH | {"RESIZE_NEAREST_NEIGHBOR", "MAX_POOL_2D"}


def with_symbol_output(tflite: bytes, symbol_outputs: int = 1) -> bytes:
    """The model with its outputs in the order they are computed and the first `symbol_outputs` of them
    requantized to scale 1 and zero point 0, so that their integers are the rounded float outputs (saturated at
    the type's range): the latent's symbols (a hyperprior head's y and z; its last output, the hyper-decoder's,
    keeps its scale). A RESHAPE (or SQUEEZE, EXPAND_DIMS) at the end moves integers unchanged, so the tensor it
    reads is rescaled too, back to the operator that requantizes; so is whatever reads a symbol tensor without
    requantizing it (the hyper-decoder's resize of z)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if len(model.subgraphs) != 1 or len(model.subgraphs[0].outputs) < symbol_outputs:
        raise UserError(f"a split head must have one subgraph with {symbol_outputs} symbol outputs")
    sub = model.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    operators = list(sub.operators or [])
    producers = {int(t): op for op in operators for t in op.outputs}
    position = {int(t): i for i, op in enumerate(operators) for t in op.outputs}
    readers: dict[int, list] = {}  # of the tensor's integers: SHAPE reads only its shape (a dynamic batch's RESHAPE)
    for op in operators:
        for t in op.inputs if kind(op) != "SHAPE" else []:
            readers.setdefault(int(t), []).append(op)
    # The converter lists a multi-output model's outputs in no useful order; the order of computation is the
    # head's: y, then z from y, then the hyper-decoder's output from z.
    sub.outputs = sorted((int(t) for t in sub.outputs), key=lambda t: position.get(t, -1))

    def rescale(quantization) -> None:
        quantization.scale, quantization.zeroPoint = [1.0], [0]
        quantization.min = quantization.max = None  # the float range the converter saw no longer applies

    def rescale_readers(tensor: int) -> None:
        for op in readers.get(tensor, []):
            if kind(op) in READS_THROUGH and int(op.inputs[0]) == tensor:
                rescale(sub.tensors[int(op.outputs[0])].quantization)
                rescale_readers(int(op.outputs[0]))
            elif kind(op) not in REQUANTIZING:
                raise UserError(f"a symbol output of the head is read by {kind(op)}, which would misread it")

    def rescale_back(tensor: int) -> None:
        """Scale 1 for the tensor and the chain of integer-moving operators that makes it, back to the operator
        that requantizes."""
        while True:
            quantization = sub.tensors[tensor].quantization
            if quantization is None or quantization.scale is None or len(quantization.scale) != 1:
                raise UserError("the head's output is not quantized per tensor; quantize the head fully to int8")
            rescale(quantization)
            op = producers.get(tensor)
            if op is None:
                raise UserError("the head's output is its input; a split head needs at least one layer")
            if kind(op) in REQUANTIZING:
                break
            source = int(op.inputs[0])
            if kind(op) not in PASSTHROUGH or len(readers.get(source, [])) != 1:
                raise UserError(
                    f"the head's output comes from {kind(op)}, which cannot give it scale 1; end the head with a "
                    "convolution, a dense layer or an addition (optionally reshaped)"
                )
            tensor = source

    original = {i: None if t.quantization is None else t.quantization.scale for i, t in enumerate(sub.tensors)}
    for output in sub.outputs[:symbol_outputs]:
        rescale_back(output)
        rescale_readers(output)
    # A bias is stored in units of the input's scale times the weights': where the input's scale changed, so does
    # the bias's integer, or the operator would add it 1 / scale times too large (the hyper-encoder reading y).
    for op in operators:
        if kind(op) in REQUANTIZING and len(op.inputs) > 2 and op.inputs[2] >= 0:
            before, after = original[int(op.inputs[0])], sub.tensors[int(op.inputs[0])].quantization.scale
            if before is not None and list(before) != list(after):
                _rescale_bias(model, sub.tensors[int(op.inputs[2])], float(before[0]) / float(after[0]))

    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def hyper_decoder_part(tflite: bytes) -> bytes:
    """The receiver's part of a hyperprior head (outputs y, z, h, as with_symbol_output orders them): the
    operators from z to h, as a model of its own with input z and output h. Its tensors and their quantization
    are the head's, so TFLite Micro computes from the decoded z the same h as the device did."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    sub = model.subgraphs[0]
    if len(sub.outputs) != 3:
        raise UserError("a hyperprior head has three outputs: the latent, the side latent and the hyper-decoder's")
    z, h = int(sub.outputs[1]), int(sub.outputs[2])
    producers = {int(t): op for op in sub.operators for t in op.outputs}
    needed, pending = set(), [h]
    while pending:
        op = producers.get(pending.pop())
        if op is None or id(op) in needed:
            continue
        needed.add(id(op))
        pending += [int(t) for t in op.inputs if int(t) >= 0 and int(t) != z]
    sub.operators = [op for op in sub.operators if id(op) in needed]
    sub.inputs, sub.outputs = [z], [h]
    model.signatureDefs = []  # they name the head's inputs and outputs
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _rescale_bias(model, bias, factor: float) -> None:
    """The bias's integers (int32 or int64) times factor, rounded, and its scales too: the same real values."""
    import numpy as np

    dtype = {2: "<i4", 4: "<i8"}.get(bias.type)
    if dtype is None:
        raise UserError("a bias of the head is not int32 or int64; quantize the head fully to int8")
    buffer = model.buffers[bias.buffer]
    values = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), dtype)
    info = np.iinfo(dtype)
    buffer.data = np.clip(np.round(values * factor), info.min, info.max).astype(dtype).view(np.uint8)
    bias.quantization.scale = [float(s) / factor for s in bias.quantization.scale]
