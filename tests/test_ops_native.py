"""Each operator, over a sweep of shapes and attributes, compiled natively with sanitizers and compared
byte for byte with the TFLite Micro reference interpreter."""

import keras
import numpy as np
import pytest

from conftest import quantized_model, random_inputs
from tinyrobust.build.firmware import build_native, run_native
from tinyrobust.compile.graph import fold_shape_arithmetic, read_tflite, remove_dead_ops
from tinyrobust.compile.model import compile_model
from tinyrobust.errors import UserError
from tinyrobust.model.reference import tflite_outputs, tflm_outputs

# A hundred operator sweeps, each compiled natively with sanitizers: the slow lane.
pytestmark = pytest.mark.slow

L = keras.layers
K = keras.ops


class Branch(L.Layer):
    """combine(x, f(x)) for a chain of layers f: a residual ADD, a gating MUL, a CONCATENATION."""

    def __init__(self, combine, *layers, **kwargs):
        super().__init__(**kwargs)
        self.combine, self.chain = combine, list(layers)

    def call(self, x):
        y = x
        for layer in self.chain:
            y = layer(y)
        return self.combine(x, y)


def fn(f):
    return L.Lambda(f)


def wide_dense(units, std):
    """A Dense layer with large weights, so that the next activation sees a wide input range."""
    return L.Dense(units, kernel_initializer=keras.initializers.RandomNormal(0, std))


def conv(filters, **kwargs):
    return L.Conv2D(filters, 3, padding="same", bias_initializer="random_normal", **kwargs)


def nearest(height, width):
    """Keras resizes with half_pixel_centers (RESIZE_NEAREST_NEIGHBOR's flag; UpSampling2D emits TILE instead)."""
    return L.Resizing(height, width, interpolation="nearest")


def nearest_v1(height, width, align_corners=False):
    """TF 1's resize, the route to align_corners and to neither flag."""
    import tensorflow as tf

    return fn(lambda x: tf.compat.v1.image.resize_nearest_neighbor(x, (height, width), align_corners=align_corners))


STATIC_BATCH = "static batch"  # built with batch size 1: Keras Dense on 3-D inputs becomes one FULLY_CONNECTED
STATIC_SHAPES = "static shapes"  # dynamic-batch pattern; TFLM runs the model with the shapes fixed (see below)
# The Keras 3 dilated-convolution pattern with a dynamic batch: TFLM keeps the file's placeholder shapes (batch 1
# where SPACE_TO_BATCH_ND makes 4) and computes garbage, so the reference is TFLite's reference kernels, which
# resize the tensors. Models with a static batch get a plain dilated CONV_2D, checked against TFLM above.
TFLITE_REFERENCE = "TFLite reference kernels"
SAME_QUANTIZATION = "same quantization"  # the first op's output quantized like its input (the file edited)
INT32_BIAS = "int32 bias"  # int16x8 with the converter's int64 biases narrowed to int32 (the file edited)
# int16 LOGISTIC and TANH take an exact path for these input scales (the file edited).
INPUT_SCALE_2_POW_M12, INPUT_SCALE_2_POW_M11 = "input scale 2^-12", "input scale 2^-11"
INPUT_SCALES = {INPUT_SCALE_2_POW_M12: 2.0**-12, INPUT_SCALE_2_POW_M11: 2.0**-11}

CASES = {
    "conv3x3-same-relu": ([L.Conv2D(8, 3, padding="same", activation="relu")], (9, 9, 3)),
    "conv5x5-valid-stride2": ([L.Conv2D(6, 5, strides=2, padding="valid")], (13, 11, 2)),
    "conv3x3-same-stride2-relu6": ([L.Conv2D(5, 3, strides=2, padding="same", activation="relu6")], (10, 7, 4)),
    "conv1x1": ([L.Conv2D(16, 1)], (6, 6, 8)),
    "conv-relu-same-quantization": ([L.Conv2D(6, 3, padding="same", activation="relu")], (6, 7, 6), SAME_QUANTIZATION),
    "conv-rect-kernel": ([L.Conv2D(3, (1, 4), strides=(1, 2), padding="same")], (5, 16, 2)),
    "conv-large-filter": ([L.Conv2D(3, 5, strides=(2, 1), padding="same")], (7, 6, 48)),  # 5x5x48 read in place
    "depthwise3x3-same": ([L.DepthwiseConv2D(3, padding="same", activation="relu")], (8, 8, 6)),
    "depthwise-multiplier2-stride2": ([L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)], (11, 9, 3)),
    # tr_depthwise_conv_s8_opt on maps too large for one patch: the interior read in place, the border over patches,
    # with a last group of channels overlapping the one before, a window of 5x5 or dilated 7x7, columns taller than
    # a patch, and an activation range narrower than int8
    "depthwise3x3-stride2-odd-channels": ([L.DepthwiseConv2D(3, strides=2, padding="same")], (22, 20, 7)),
    "depthwise3x3-valid-relu6": ([L.DepthwiseConv2D(3, activation="relu6")], (20, 20, 8)),
    "depthwise5x5-tall": ([L.DepthwiseConv2D(5, padding="same")], (90, 9, 4)),
    "depthwise7x7-dilated": ([L.DepthwiseConv2D(7, dilation_rate=2, padding="same")], (20, 20, 4), STATIC_BATCH),
    "depthwise-relu-same-quantization": (
        [L.DepthwiseConv2D(3, padding="same", activation="relu")],
        (8, 8, 8),
        SAME_QUANTIZATION,
    ),
    "dense": ([L.Flatten(), L.Dense(12)], (4, 4, 3)),
    "dense-relu-chain": ([L.Flatten(), L.Dense(20, activation="relu"), L.Dense(7)], (30,)),
    "maxpool2": ([L.MaxPooling2D(2)], (8, 8, 4)),
    "maxpool3-stride2-same": ([L.MaxPooling2D(3, strides=2, padding="same")], (9, 7, 3)),
    "avgpool2": ([L.AveragePooling2D(2)], (8, 8, 4)),
    "avgpool3-stride2-same": ([L.AveragePooling2D(3, strides=2, padding="same")], (9, 7, 3)),
    "avgpool-global-shape": ([L.AveragePooling2D((5, 5))], (5, 5, 10)),
    # ADD: same shapes, constants, broadcasting along every kind of dimension, fused activations
    "add-residual-conv": ([Branch(K.add, conv(4), conv(4))], (6, 6, 4)),
    "add-residual-relu": ([Branch(lambda x, y: K.relu(x + y), conv(3, activation="relu"))], (5, 7, 3)),
    "add-dense": ([L.Dense(10), Branch(K.add, L.Dense(10, activation="tanh"))], (6,)),
    "add-const-channels": ([fn(lambda x: x + np.linspace(-1, 2, 5, dtype="float32"))], (3, 4, 5)),
    "add-broadcast-channels": ([fn(lambda x: x + K.mean(x, axis=-1, keepdims=True))], (4, 5, 6)),
    "add-broadcast-spatial": ([fn(lambda x: x + K.mean(x, axis=(1, 2), keepdims=True))], (5, 4, 3)),
    "add-broadcast-both-inputs": ([fn(lambda x: x[:, :, :1, :] + x[:, :1, :, :])], (4, 6, 3)),
    "add-broadcast-3d": ([fn(lambda x: K.tanh(x) + x[:, :1, :])], (7, 3)),
    # the ADD fused into the convolution before it (tr_conv_add_s8), written over the skip, with a fused RELU, and
    # with the skip as the ADD's first input (add-residual-conv fuses one whose skip is the model's input)
    "add-fused-over-skip": (
        [conv(8), Branch(lambda x, y: K.relu(x + y), conv(8, activation="relu"), conv(8))],
        (6, 7, 3),
    ),
    "add-fused-skip-second": ([conv(6), Branch(lambda x, y: y + x, L.Conv2D(6, 1, strides=1))], (5, 5, 2)),
    # layers written over their input (planner ties): depthwise over a map of one patch, 1x1 convolutions that
    # widen (the input inside the output) and narrow
    "in-place-depthwise-pointwise": (
        [
            conv(8),
            L.DepthwiseConv2D(3, padding="same", activation="relu"),
            L.Conv2D(16, 1),
            L.Conv2D(8, 1),
            L.DepthwiseConv2D(3, padding="same"),
            L.Conv2D(12, 1, activation="relu"),
        ],
        (6, 7, 3),
    ),
    # MUL
    "mul-swish": ([conv(4), fn(lambda x: x * K.sigmoid(x))], (5, 5, 2)),
    "mul-const": ([fn(lambda x: x * np.array([0.5, -2.0, 3.0], dtype="float32"))], (4, 4, 3)),
    "mul-squeeze-excite": ([fn(lambda x: x * K.sigmoid(K.mean(x, axis=(1, 2), keepdims=True)))], (4, 5, 6)),
    "mul-relu": ([L.Dense(8), Branch(lambda x, y: K.relu(x * y), L.Dense(8))], (5,)),
    # SOFTMAX
    "softmax-dense": ([L.Dense(10), L.Softmax()], (8,)),
    "softmax-wide-range": ([wide_dense(33, 3), L.Softmax()], (6,)),
    "softmax-4d": ([L.Softmax()], (3, 4, 5)),
    # PAD, PADV2
    "pad-2d-asymmetric": ([L.ZeroPadding2D(((1, 2), (0, 3)))], (4, 5, 3)),
    "pad-after-conv": ([conv(4), L.ZeroPadding2D(2), L.Conv2D(3, 3)], (5, 5, 2)),
    "pad-1d": ([L.ZeroPadding1D((2, 1))], (6, 4)),
    "pad-channels": ([fn(lambda x: K.pad(x, ((0, 0), (0, 0), (0, 0), (1, 2))))], (3, 3, 2)),
    "padv2-constant": ([fn(lambda x: K.pad(x, ((0, 0), (1, 1), (2, 0), (0, 0)), constant_values=0.5))], (4, 4, 3)),
    # MEAN
    "mean-global-pool": ([conv(6), L.GlobalAveragePooling2D()], (6, 5, 3)),
    "mean-global-pool-keepdims": ([L.GlobalAveragePooling2D(keepdims=True)], (4, 4, 5)),
    "mean-channels": ([fn(lambda x: K.mean(x, axis=-1))], (4, 3, 5)),
    "mean-same-quantization": ([L.GlobalAveragePooling2D()], (4, 4, 5), SAME_QUANTIZATION),
    "mean-1d": ([L.GlobalAveragePooling1D()], (7, 5)),
    # CONCATENATION
    "concat-channels": ([Branch(lambda x, y: K.concatenate([x, y], axis=-1), conv(5, activation="relu"))], (4, 4, 3)),
    "concat-width": ([Branch(lambda x, y: K.concatenate([x, y], axis=2), L.ReLU())], (3, 4, 2)),
    "concat-three": ([fn(lambda x: K.concatenate([x, K.relu(x), x[:, :, :, :1]], axis=-1))], (3, 3, 2)),
    # LOGISTIC, TANH
    "logistic": ([L.Activation("sigmoid")], (4, 4, 3)),
    "logistic-wide-range": ([wide_dense(32, 4), L.Activation("sigmoid")], (8,)),
    "tanh": ([L.Activation("tanh")], (4, 4, 3)),
    "tanh-wide-range": ([wide_dense(32, 4), L.Activation("tanh")], (8,)),
    # RELU, RELU6, HARD_SWISH, QUANTIZE
    "relu": ([L.ReLU()], (4, 4, 3)),
    "relu-after-concat": ([Branch(lambda x, y: K.relu(K.concatenate([x, y], axis=-1)), conv(3))], (4, 4, 2)),
    "relu6": ([L.ReLU(6.0)], (4, 4, 3)),
    "relu6-after-dense": ([wide_dense(12, 5), L.ReLU(6.0)], (6,)),
    "hard-swish": ([L.Activation("hard_swish")], (4, 4, 3)),
    "hard-swish-wide-range": ([wide_dense(16, 6), L.Activation("hard_swish")], (8,)),
    "quantize-requantize": ([fn(lambda x: K.concatenate([K.tanh(x), K.sigmoid(x)], axis=-1))], (4, 4, 3)),
    "quantize-three-scales": ([fn(lambda x: K.concatenate([K.tanh(x), K.sigmoid(x), x], axis=1))], (3, 4, 2)),
    # STRIDED_SLICE
    "slice-strided": ([fn(lambda x: x[:, 1:3, ::2, :])], (4, 5, 3)),
    "slice-reversed": ([fn(lambda x: x[:, ::-1, 1:, :])], (4, 4, 3)),
    "slice-shrink-axis": ([fn(lambda x: x[:, 1, :, :])], (4, 4, 3)),
    "slice-channels": ([fn(lambda x: x[..., 1:3])], (3, 4, 5)),
    "slice-2d-step3": ([fn(lambda x: x[:, 2::3])], (11,)),
    # RESIZE_NEAREST_NEIGHBOR: upsampling by 2 before a convolution (a hyper-decoder's), ratios that are not
    # integers, shrinking, and each combination of align_corners and half_pixel_centers the converter emits
    "resize-upsample2-conv": ([nearest(8, 8), L.Conv2D(4, 3, padding="same")], (4, 4, 3), STATIC_BATCH),
    "resize-upsample2-dynamic-batch": ([nearest(10, 6)], (5, 3, 4)),
    "resize-non-integer-ratio": ([nearest(7, 4)], (3, 5, 2)),
    "resize-shrink": ([nearest(3, 5)], (7, 11, 2)),
    "resize-align-corners": ([nearest_v1(7, 4, align_corners=True)], (3, 5, 2)),
    "resize-align-corners-to-one-row": ([nearest_v1(1, 9, align_corners=True)], (4, 6, 3)),
    "resize-no-flags": ([nearest_v1(9, 3)], (4, 7, 3)),
    # FULLY_CONNECTED on inputs with leading dimensions
    "dense-3d-input": ([L.Dense(5)], (4, 6), STATIC_BATCH),
    "dense-4d-input-chain": ([L.Dense(7, activation="relu"), L.Dense(3)], (2, 3, 6), STATIC_BATCH),
    "dense-3d-input-dynamic-batch": ([L.Dense(5)], (4, 6), STATIC_SHAPES),
    "dense-4d-input-dynamic-batch": ([L.Dense(7, activation="relu"), L.Dense(3)], (2, 3, 6), STATIC_SHAPES),
    # Dilated convolutions: a static batch gives CONV_2D with dilation, a dynamic batch the Keras 3
    # SPACE_TO_BATCH_ND / CONV_2D / BATCH_TO_SPACE_ND pattern that the compiler fuses back
    "dilated-conv": ([L.Conv2D(4, 3, dilation_rate=2, padding="same")], (9, 9, 3), STATIC_BATCH),
    "dilated-conv-s2b-valid": ([L.Conv2D(4, 3, dilation_rate=2)], (9, 9, 3), TFLITE_REFERENCE),
    "dilated-conv-s2b-same": ([L.Conv2D(4, 3, dilation_rate=2, padding="same")], (9, 9, 3), TFLITE_REFERENCE),
    "dilated-conv-s2b-rect": ([L.Conv2D(5, (3, 2), dilation_rate=3, padding="same")], (11, 8, 2), TFLITE_REFERENCE),
    "dilated-depthwise-s2b": ([L.DepthwiseConv2D(3, dilation_rate=2, padding="same")], (8, 8, 4), TFLITE_REFERENCE),
}


# int16x8 (16-bit activations, 8-bit weights): every operator of the 16-bit runtime over shapes and attributes,
# several per model to keep the builds few.
CASES_16X8 = {
    "conv-same-relu-valid-stride2": (
        [L.Conv2D(8, 3, padding="same", activation="relu"), L.Conv2D(6, 5, strides=2, padding="valid")],
        (13, 11, 3),
    ),
    "conv-stride2-relu6-rect-1x1-no-bias": (
        [L.Conv2D(5, 3, strides=2, padding="same", activation="relu6"),
         L.Conv2D(3, (1, 4), strides=(1, 2), padding="same"), L.Conv2D(16, 1, use_bias=False)],
        (10, 16, 4),
    ),
    "conv-deep": ([L.Conv2D(4, 3, kernel_initializer=keras.initializers.RandomNormal(0, 2))], (5, 5, 64)),
    "dilated-conv-dense-4d": ([L.Conv2D(4, 3, dilation_rate=2, padding="same"), L.Dense(5)], (9, 9, 3), STATIC_BATCH),
    "depthwise-relu-relu6-multiplier2-stride2": (
        [L.DepthwiseConv2D(3, padding="same", activation="relu"),
         L.DepthwiseConv2D(5, padding="same", use_bias=False, activation="relu6"),
         L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)],
        (11, 9, 3),
    ),
    # Without a bias TFLM's 16-bit FULLY_CONNECTED still accumulates in 64 bits.
    "dense-relu-chain-no-bias": ([L.Flatten(), L.Dense(20, activation="relu"), L.Dense(9, use_bias=False), L.Dense(7)],
                                 (4, 4, 3)),
    "maxpool2-avgpool3-stride2-same": ([L.MaxPooling2D(2), L.AveragePooling2D(3, strides=2, padding="same")],
                                       (16, 14, 3)),
    "maxpool3-stride2-same-avgpool-global": ([L.MaxPooling2D(3, strides=2, padding="same"),
                                              L.AveragePooling2D((5, 4))], (9, 7, 3)),
    "add-residual-conv-relu": (
        [Branch(K.add, conv(4), conv(4)), Branch(lambda x, y: K.relu(x + y), conv(4, activation="relu"))],
        (6, 6, 4),
    ),
    "add-dense": ([L.Dense(10), Branch(K.add, L.Dense(10, activation="relu"))], (6,)),
    "add-const-broadcast": (
        [fn(lambda x: x + np.linspace(-1, 2, 5, dtype="float32")),
         fn(lambda x: x + np.linspace(-3, 1, 4, dtype="float32")[:, None, None])],
        (4, 3, 5),
    ),
    "mul-branch-relu-const": (
        [L.Dense(8), Branch(lambda x, y: K.relu(x * y), L.Dense(8)),
         fn(lambda x: x * np.linspace(-2, 3, 8, dtype="float32"))],
        (5,),
    ),
    "mul-broadcast-spatial": ([conv(6), fn(lambda x: x * K.mean(x, axis=(1, 2), keepdims=True))], (4, 5, 3)),
    "relu-dense-relu6": ([L.ReLU(), L.Flatten(), wide_dense(12, 5), L.ReLU(6.0)], (4, 4, 3)),
    "relu6": ([L.ReLU(6.0)], (4, 4, 3)),
    "relu-after-concat-relu6": (
        [Branch(lambda x, y: K.relu(K.concatenate([x, y], axis=-1)), conv(3)),
         Branch(lambda x, y: K.relu6(K.concatenate([x, y], axis=-1)), conv(2))],
        (4, 4, 2),
    ),
    "concat-width-three": (
        [Branch(lambda x, y: K.concatenate([x, y], axis=2), L.ReLU()),
         fn(lambda x: K.concatenate([x, K.relu(x), x[:, :, :, :1]], axis=-1))],
        (3, 4, 2),
    ),
    "slice-strided-reversed-shrink": (
        [fn(lambda x: x[:, 1:4, ::2, :]), fn(lambda x: x[:, ::-1, 1:, :]), fn(lambda x: x[:, 1, :, 1:3])],
        (5, 7, 4),
    ),
    "slice-2d-step3": ([fn(lambda x: x[:, 2::3])], (11,)),
    "logistic": ([L.Activation("sigmoid")], (4, 4, 3)),
    "logistic-wide-range": ([wide_dense(32, 4), L.Activation("sigmoid")], (8,)),
    "logistic-power-of-two-scale": ([L.Activation("sigmoid")], (4, 4, 3), INPUT_SCALE_2_POW_M12),
    "tanh": ([L.Activation("tanh")], (4, 4, 3)),
    "tanh-wide-range": ([wide_dense(32, 4), L.Activation("tanh")], (8,)),
    "tanh-power-of-two-scale": ([L.Activation("tanh")], (4, 4, 3), INPUT_SCALE_2_POW_M12),
    "tanh-power-of-two-scale-shift1": ([L.Activation("tanh")], (4, 4, 3), INPUT_SCALE_2_POW_M11),
    "softmax-wide-range": ([wide_dense(33, 3), L.Softmax()], (6,)),
    "softmax-narrow-range": ([wide_dense(40, 0.02), L.Softmax()], (6,)),
    "softmax-4d": ([L.Softmax()], (3, 4, 5)),
    "pad-conv-mean-global-pool": ([L.ZeroPadding2D(((1, 2), (0, 1))), conv(6), L.GlobalAveragePooling2D()], (6, 5, 3)),
    "pad-channels-mean-channels": ([fn(lambda x: K.pad(x, ((0, 0), (1, 1), (2, 0), (0, 2)))),
                                    fn(lambda x: K.mean(x, axis=-1))], (4, 4, 3)),
    "resize-upsample2-conv-non-integer-shrink": ([nearest(8, 8), conv(5), nearest(11, 6), nearest(4, 5)], (4, 4, 3),
                                                 STATIC_BATCH),
    "resize-align-corners-no-flags": ([nearest_v1(7, 4, align_corners=True), nearest_v1(1, 9, align_corners=True),
                                       nearest_v1(5, 13)], (3, 5, 2)),
    # An int32 bias makes TFLM's 16-bit CONV_2D and FULLY_CONNECTED accumulate and requantize in 32 bits.
    "conv-dense-int32-bias": ([L.Conv2D(6, 3, kernel_initializer=keras.initializers.RandomNormal(0, 1)), L.Flatten(),
                               L.Dense(5)], (6, 6, 16), INT32_BIAS),
    "cnn": (
        [conv(8, activation="relu"), L.DepthwiseConv2D(3, activation="relu6"), L.MaxPooling2D(2), L.Flatten(),
         L.Dense(10), L.Softmax()],
        (10, 10, 2),
    ),
}  # fmt: skip


def static_batch_model(layers, input_shape, seed=0, precision="int8") -> bytes:
    return quantized_model(layers, input_shape, seed, precision, batch_size=1)


def with_same_quantization(tflite: bytes) -> bytes:
    """The model with its first op's output quantized like that op's input."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    first = sub.operators[0]
    sub.tensors[first.outputs[0]].quantization = sub.tensors[first.inputs[0]].quantization
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_input_scale(tflite: bytes, scale: float) -> bytes:
    """The model with its input tensor's scale replaced."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    sub.tensors[sub.inputs[0]].quantization.scale = np.array([scale], dtype=np.float32)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_int32_bias(tflite: bytes) -> bytes:
    """The model with every int64 bias of a CONV_2D or FULLY_CONNECTED stored as int32."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    for op in sub.operators:
        kind = model.operatorCodes[op.opcodeIndex]
        if max(kind.builtinCode, kind.deprecatedBuiltinCode) not in (3, 9) or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue  # CONV_2D is 3, FULLY_CONNECTED 9
        bias = sub.tensors[op.inputs[2]]
        buffer = model.buffers[bias.buffer]
        values = np.frombuffer(bytes(buffer.data), "<i8").astype("<i4")
        buffer.data, bias.type = np.frombuffer(values.tobytes(), np.uint8), fb.TensorType.INT32
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_static_shapes(tflite: bytes) -> bytes:
    """The model as TFLM can run it: Keras Dense on a 3-D input, converted with a dynamic batch, computes its
    RESHAPE shapes with ops TFLM lacks (REDUCE_PROD) and keeps placeholder shapes. Here that shape arithmetic is
    folded into constants and dropped, and the batch-1 shapes are written into the file. Only shapes change,
    never an arithmetic op, so TFLM's outputs stay the reference."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    graph = read_tflite(tflite)
    fold_shape_arithmetic(graph)
    remove_dead_ops(graph)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    for t in graph.tensors:
        sub.tensors[t.index].shape = np.array(t.shape, dtype=np.int32)
        sub.tensors[t.index].shapeSignature = None
    for op in graph.ops:
        if op.kind == "RESHAPE" and len(op.inputs) > 1 and model.buffers[sub.tensors[op.inputs[1]].buffer].data is None:
            buffer = fb.BufferT()
            buffer.data = np.frombuffer(graph.tensors[op.inputs[1]].data.astype("<i4").tobytes(), np.uint8)
            model.buffers.append(buffer)
            sub.tensors[op.inputs[1]].buffer = len(model.buffers) - 1
    kept = {op.position for op in graph.ops}
    sub.operators = [o for i, o in enumerate(sub.operators) if i in kept]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def full_range_inputs(tflite: bytes, count: int, seed: int = 1) -> np.ndarray:
    """Random inputs over the whole range of the model's input type."""
    graph = read_tflite(tflite)
    tensor = graph.tensors[graph.inputs[0]]
    info = np.iinfo(tensor.dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, info.max, (count, *tensor.shape[1:]), endpoint=True).astype(tensor.dtype)


def assert_native_bit_exact(tflite: bytes, xq: np.ndarray, tmp_path, reference_model=None, tflite_reference=False):
    compiled = compile_model(tflite)
    exe = build_native(compiled, tmp_path)
    native = np.frombuffer(run_native(exe, xq), dtype=compiled.output.dtype).reshape(len(xq), -1)
    if tflite_reference:
        reference, engine = (
            tflite_outputs(tflite, xq, reference_kernels=True).reshape(len(xq), -1),
            "TFLite's reference kernels",
        )
    else:
        reference, engine = tflm_outputs(reference_model or tflite, xq).reshape(len(xq), -1), "TFLM"
    assert reference.dtype == native.dtype
    mismatches = np.argwhere(native != reference)
    assert mismatches.size == 0, f"{len(mismatches)} output values differ from {engine}, first at {mismatches[0]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_native_bit_exact_with_tflm(case, tmp_path):
    layers, input_shape, *variant = CASES[case]
    build = static_batch_model if variant == [STATIC_BATCH] else quantized_model
    tflite = build(layers, input_shape)
    if variant == [SAME_QUANTIZATION]:
        tflite = with_same_quantization(tflite)
    reference_model = with_static_shapes(tflite) if variant == [STATIC_SHAPES] else tflite
    xq = random_inputs(tflite, 40)
    assert_native_bit_exact(tflite, xq, tmp_path, reference_model, tflite_reference=variant == [TFLITE_REFERENCE])


@pytest.mark.parametrize("case", sorted(CASES_16X8))
def test_native_int16x8_bit_exact_with_tflm(case, tmp_path):
    layers, input_shape, *variant = CASES_16X8[case]
    build = static_batch_model if variant == [STATIC_BATCH] else quantized_model
    tflite = build(layers, input_shape, precision="int16x8")
    if variant == [INT32_BIAS]:
        tflite = with_int32_bias(tflite)
    if variant and variant[0] in INPUT_SCALES:
        tflite = with_input_scale(tflite, INPUT_SCALES[variant[0]])
    graph = read_tflite(tflite)
    assert {graph.tensors[t].type_name for t in graph.inputs + graph.outputs} == {"int16"}
    assert_native_bit_exact(tflite, full_range_inputs(tflite, 40), tmp_path)


def test_depthwise_layers_of_depth_multiplier_one_take_the_optimized_kernels():
    """3x3 windows at stride 1 or 2 take the band kernel; other windows, strides and dilations the general one."""
    layers = [
        L.DepthwiseConv2D(3, padding="same"),
        L.DepthwiseConv2D(3, depth_multiplier=2),
        L.DepthwiseConv2D(3, strides=2, padding="same"),
        L.DepthwiseConv2D(3, strides=3),
        L.DepthwiseConv2D(2),
    ]
    compiled = compile_model(quantized_model(layers, (17, 17, 4)))
    functions = [s.function for s in compiled.steps]
    assert functions == [
        "tr_depthwise3x3_s8_opt",
        "tr_depthwise_conv_s8",
        "tr_depthwise3x3_s8_opt",
        "tr_depthwise_conv_s8_opt",
        "tr_depthwise_conv_s8_opt",
    ]


def test_convolutions_take_as_many_pixel_groups_a_block_as_the_models_largest_layer_has_stack_for():
    """lower.plan_pixel_groups. The 1x1 convolution over 768 channels needs the most stack with one group of four
    pixels: 6,144 bytes of widened field and 832 of outputs and gathered field, 6,976 in all, above the band's
    3,328 and the 2,048 a block always may take. The others take as many groups as fit in that: 27 of 256 bytes over
    3 channels (with 36 bytes of outputs and field), 15 over 8 channels (3,080 bytes of outputs and field)."""
    layers = [L.Conv2D(8, 1), L.DepthwiseConv2D(3, padding="same"), L.Conv2D(768, 1), L.Conv2D(16, 1)]
    compiled = compile_model(quantized_model(layers, (24, 24, 3)))
    assert [s.function for s in compiled.steps] == [
        "tr_conv_s8_opt", "tr_depthwise3x3_s8_opt", "tr_conv_s8_opt", "tr_conv_s8_opt"
    ]  # fmt: skip
    assert [s.fields.get("pixel_groups") for s in compiled.steps] == [27, None, 15, 1]


def test_a_convolution_whose_four_widened_fields_exceed_the_block_limit_takes_the_general_kernel():
    """lower.BLOCK_LIMIT keeps the _opt convolution's stack within the default reserve: four 3x3x128 fields widened
    (9,216 bytes), one gathered (1,152) and four pixels' outputs fit with 480 output channels (12,288 bytes), not
    with 512."""
    layers = [L.Conv2D(480, 3), L.Conv2D(128, 1), L.Conv2D(512, 3)]
    compiled = compile_model(quantized_model(layers, (5, 5, 128)))
    assert [s.function for s in compiled.steps] == ["tr_conv_s8_opt", "tr_conv_s8_opt", "tr_conv_s8"]


def test_layers_that_allow_it_write_over_their_input_in_the_arena():
    """The planner's ties, as compiled: the fused ADD's sum over its skip, a depthwise layer over its input, a 1x1
    convolution's output over its input (from the start when it narrows, with the input in its upper part when it
    widens)."""
    layers, input_shape = CASES["in-place-depthwise-pointwise"]
    compiled = compile_model(quantized_model(layers, input_shape))
    at = compiled.offsets
    dw1, pw16, pw8, dw2, pw12 = compiled.steps[1:]
    assert dw1.function == dw2.function == "tr_depthwise3x3_s8_opt"
    assert at[dw1.output] == at[dw1.inputs[0]] and at[dw2.output] == at[dw2.inputs[0]]
    assert at[pw16.inputs[0]] == at[pw16.output] + 6 * 7 * 8  # the input: the upper half of the output
    assert at[pw8.inputs[0]] == at[pw8.output] and at[pw12.inputs[0]] == at[pw12.output] + 176  # 6x7x4, aligned
    layers, input_shape = CASES["add-fused-over-skip"]
    compiled = compile_model(quantized_model(layers, input_shape))
    assert [s.function for s in compiled.steps] == ["tr_conv_s8_opt", "tr_conv_s8_opt", "tr_conv_add_s8_opt"]
    fused = compiled.steps[2]
    assert fused.op.kind == "CONV_2D+ADD" and compiled.offsets[fused.output] == compiled.offsets[fused.inputs[1]]
    assert compiled.arena_bytes == 2 * -(-6 * 7 * 8 // 16) * 16  # two maps of 6x7x8, not three


def test_an_add_of_the_graph_input_is_fused_but_not_written_over_it():
    compiled = compile_model(quantized_model(*CASES["add-residual-conv"]))
    fused = compiled.steps[-1]
    assert fused.function == "tr_conv_add_s8_opt" and fused.inputs[1] == compiled.input.index
    assert compiled.offsets[fused.output] != compiled.offsets[compiled.input.index]


def test_int16x8_padv2_with_a_float_pad_value_is_refused():
    """The int16x8 converter leaves PADV2's pad value float32, which TFLM refuses too."""
    layers = [fn(lambda x: K.pad(x, ((0, 0), (1, 1), (2, 0), (0, 0)), constant_values=0.5))]
    with pytest.raises(UserError, match="PADV2 at position 0 .*float32 pad value"):
        compile_model(quantized_model(layers, (4, 4, 3), precision="int16x8"))
