"""Defenses: input pre-processing (host side with adversarial-robustness-toolbox, and on the device for the cheap
ones) and training that makes a new float model, to be quantized and deployed like any other.

DEFENSES maps a name to a Defense: its kind ("input", "training" or "smoothing"), its parameters with their
defaults and named presets, and a factory. make(name, preset, **params) gives a Configured defense: .apply(x) for
an input defense (float inputs in the model's input domain), .train(keras_model, x, y) for a training one
(cached), .device_stages() for the input defenses the device can run before the network (see compile_model's
preprocess; each stage, with the numpy reference its C kernel equals, is defined in compile/stages.py), and
.smoothing() for randomized smoothing, which only the device runs: its firmware votes over noisy copies of each
input (compile/smoothing.py).
PixelDefend needs a PixelCNN: pixel_cnn(x_train) trains a small one in Keras (ART ships none, and its examples
need PyTorch, which is not installed here).

Presets: the values of each defense's original paper for an MNIST-like and a CIFAR-like input
(feature squeezing: Xu et al. 2018; PGD training: Madry et al. 2018; distillation: Papernot et al. 2016;
ensemble adversarial training: Tramer et al. 2018; TRADES: Zhang et al. 2019; randomized smoothing: Cohen et al.
2019; Sinkhorn adversarial training: Wong et al. 2019), and "digits": a small budget that trains (or, smoothing,
votes on) digits-cnn here in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinyrobust.compile import stages
from tinyrobust.errors import UserError

# ---------------------------------------------------------------------------------------------------------
# The registry.


@dataclass(frozen=True)
class Defense:
    name: str
    kind: str  # "input": pre-processing of inputs; "training": a new float model; "smoothing": votes on the device
    summary: str
    defaults: dict
    presets: dict[str, dict]
    factory: Callable  # (**params) -> x -> x (input), or (keras_model, x, y, seed, **params) -> model (training)
    device: tuple[str, ...] = ()  # the device stages (compile/stages.py) that run it, in order
    meanings: dict = field(default_factory=dict)  # what each parameter means, for `tinyrobust defenses`

    @property
    def places(self) -> tuple[str, ...]:
        """Where a campaign can run it (its [[defenses]] where): a training defense's model runs anywhere."""
        if self.kind == "smoothing":
            return ("device",)
        return ("host", "device") if self.device else ("host",)


DEFENSES: dict[str, Defense] = {}

# What a parameter means in every defense that has it; each defense's registration says what its others mean.
SHARED_MEANINGS = {
    "clip_values": "the model's input range (low, high)",
    "bit_depth": "bits kept of each input value",
    "window_size": "side of the square median window, in pixels",
    "epochs": "training epochs",
    "batch_size": "training batch size",
    "learning_rate": "Adam's learning rate",
}


def defense(name: str, kind: str, summary: str, defaults: dict, presets: dict, device: tuple[str, ...] = (),
            meanings: dict | None = None):  # fmt: skip
    """Register a factory as the defense `name`; every parameter needs a meaning, its own in meanings or one of
    SHARED_MEANINGS."""

    def register(factory: Callable) -> Callable:
        described = {key: (meanings or {}).get(key, SHARED_MEANINGS.get(key)) for key in defaults}
        unexplained = [key for key, meaning in described.items() if meaning is None]
        if unexplained:
            raise ValueError(f"defense {name} registers parameters without a meaning: {', '.join(unexplained)}")
        DEFENSES[name] = Defense(name, kind, summary, defaults, presets, factory, device, described)
        return factory

    return register


@dataclass
class Configured:
    """A defense with its parameters set."""

    defense: Defense
    params: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.defense.name

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Pre-process float inputs (N, ...) in the model's input domain."""
        if self.defense.kind == "smoothing":
            raise UserError(f"{self.name} votes over noisy copies on the device, not on the host: give it where = "
                            '"device"')  # fmt: skip
        if self.defense.kind != "input":
            raise UserError(f"{self.name} is a training defense: call train(keras_model, x, y), not apply")
        return np.asarray(self.defense.factory(**self.params)(np.asarray(x, np.float32)), np.float32)

    def device_stages(self) -> list[dict]:
        """The stages for compile_model(tflite, preprocess=...) (none for smoothing); an error for a defense the
        device cannot run."""
        if "device" not in self.defense.places:
            runnable = ", ".join(n for n, d in DEFENSES.items() if "device" in d.places)
            raise UserError(f"{self.name} does not run on the device; these do: {runnable}")
        return stages.from_defense(self.defense.device, self.params)

    def smoothing(self):
        """compile_model's smoothing (compile.smoothing.Smoothing, its parameters checked) for randomized smoothing;
        None for the other defenses."""
        return self.defense.factory(**self.params) if self.defense.kind == "smoothing" else None

    def train(self, keras_model, x: np.ndarray, y: np.ndarray, seed: int = 0, cache: bool = True):
        """A new float Keras model trained with this defense from keras_model (which is left unchanged), cached
        by the model's weights, the data, the parameters and the seed."""
        if self.defense.kind != "training":
            raise UserError(f"{self.name} is an input defense: call apply(x), not train")
        if not cache:
            return self.defense.factory(keras_model, x, y, seed, **self.params)
        return _cached(self, keras_model, x, y, seed)


def make(name: str, preset: str | None = None, **params) -> Configured:
    """The defense with its defaults, overridden by a preset's values, then by params."""
    if name not in DEFENSES:
        raise UserError(f"unknown defense {name}; choose from: {', '.join(DEFENSES)}")
    d = DEFENSES[name]
    if preset is not None and preset not in d.presets:
        raise UserError(f"defense {name} has no preset '{preset}'; choose from: {', '.join(d.presets)}")
    unknown = sorted(set(params) - set(d.defaults))
    if unknown:
        raise UserError(f"defense {name} takes {', '.join(d.defaults)}, not {', '.join(unknown)}")
    return Configured(d, {**d.defaults, **(d.presets[preset] if preset else {}), **params})


# ---------------------------------------------------------------------------------------------------------
# Input pre-processing. clip_values is the model's input domain (digits and the study's images: [0, 1]).


@defense(
    "squeeze-bits", "input", "feature squeezing: reduce each input value to bit_depth bits (ART FeatureSqueezing)",
    {"bit_depth": 5, "clip_values": (0.0, 1.0)}, {"mnist": {"bit_depth": 1}, "cifar": {"bit_depth": 5}},
    device=("squeeze_bits",),
)  # fmt: skip
def squeeze_bits(bit_depth: int, clip_values: tuple[float, float]):
    from art.defences.preprocessor import FeatureSqueezing

    return lambda x: FeatureSqueezing(clip_values=clip_values, bit_depth=bit_depth)(x)[0]


@defense(
    "median", "input", "spatial smoothing: k x k median of each channel, edges reflected (ART SpatialSmoothing)",
    {"window_size": 2, "clip_values": (0.0, 1.0)}, {"mnist": {"window_size": 2}, "cifar": {"window_size": 2}},
    device=("median",),
)  # fmt: skip
def median(window_size: int, clip_values: tuple[float, float]):
    from art.defences.preprocessor import SpatialSmoothing

    return lambda x: SpatialSmoothing(window_size=window_size, channels_first=False, clip_values=clip_values)(x)[0]


@defense(
    "feature-squeezing", "input", "bit-depth squeezing, then median smoothing (the study's first defense)",
    {"bit_depth": 5, "window_size": 2, "clip_values": (0.0, 1.0)},
    {"mnist": {"bit_depth": 1, "window_size": 2}, "cifar": {"bit_depth": 5, "window_size": 2}},
    device=("squeeze_bits", "median"),
)  # fmt: skip
def feature_squeezing(bit_depth: int, window_size: int, clip_values: tuple[float, float]):
    bits, smooth = squeeze_bits(bit_depth, clip_values), median(window_size, clip_values)
    return lambda x: smooth(bits(x))


@defense(
    "jpeg", "input", "JPEG compression at a quality (ART JpegCompression; 1 or 3 channels)",
    {"quality": 50, "clip_values": (0.0, 1.0)}, {"mild": {"quality": 75}, "strong": {"quality": 25}},
    meanings={"quality": "JPEG quality, 1 to 100 (lower compresses more)"},
)  # fmt: skip
def jpeg(quality: int, clip_values: tuple[float, float]):
    from art.defences.preprocessor import JpegCompression

    return lambda x: JpegCompression(clip_values=clip_values, quality=quality, channels_first=False)(x)[0]


@defense(
    "total-variation", "input", "total variation minimization of randomly kept pixels (ART TotalVarMin)",
    {"prob": 0.3, "norm": 2, "lamb": 0.5, "max_iter": 10, "clip_values": (0.0, 1.0)},
    {"guo2018": {"prob": 0.3, "lamb": 0.03, "max_iter": 10}},
    meanings={"prob": "share of the pixels kept, at random, as the reconstruction's anchors",
              "norm": "norm of the distance to the kept pixels", "lamb": "weight of the total variation",
              "max_iter": "iterations of the minimization"},
)  # fmt: skip
def total_variation(prob: float, norm: int, lamb: float, max_iter: int, clip_values: tuple[float, float]):
    from art.defences.preprocessor import TotalVarMin

    def apply(x):
        np.random.seed(0)  # TotalVarMin draws its pixel mask from numpy's global generator
        return TotalVarMin(prob=prob, norm=norm, lamb=lamb, max_iter=max_iter, clip_values=clip_values)(x)[0]

    return apply


@defense(
    "pixeldefend", "input", "PixelDefend: move each pixel within eps/255 to its most likely value under a PixelCNN",
    {"eps": 16, "pixel_cnn": None, "clip_values": (0.0, 1.0)}, {"song2018": {"eps": 16}},
    meanings={"eps": "largest move of each pixel, in steps of 1/255",
              "pixel_cnn": "the PixelCNN (a campaign trains one on the model's training data)"},
)  # fmt: skip
def pixeldefend(eps: int, pixel_cnn, clip_values: tuple[float, float]):
    if pixel_cnn is None:
        raise UserError(
            "PixelDefend needs a trained PixelCNN (an ART classifier giving 256 probabilities per input value); "
            "ART ships none and its examples are PyTorch, which is not installed here: pass "
            "pixel_cnn=defenses.pixel_cnn(x_train), a small Keras PixelCNN trained on your data"
        )

    def apply(x):
        # ART's PixelDefend, vectorized: ART's own loop computes its search range in uint8, which under numpy 2
        # wraps around for values below eps (an empty range, then a crash) and most digit pixels are 0.
        probs = np.asarray(pixel_cnn.get_activations(x, layer=-1, batch_size=128)).reshape(len(x), -1, 256)
        values = (x * 255).astype(np.uint8).reshape(len(x), -1, 1).astype(np.int32)
        candidates = np.arange(256)[None, None, :]
        allowed = (candidates >= values - eps) & (candidates <= values + eps)
        best = np.argmax(np.where(allowed, probs, -1.0), axis=2)  # the first most likely value, as ART picks
        return np.clip(best.reshape(x.shape) / 255.0, clip_values[0], clip_values[1])

    return apply


def _masked_conv_class():
    import keras

    class MaskedConv2D(keras.layers.Conv2D):
        """PixelCNN's masked convolution: a pixel sees only the pixels before it in raster order (mask "A", for
        the first layer, also hides the pixel itself; "B" lets it see its own features)."""

        def __init__(self, filters, kernel_size, mask, **kwargs):
            super().__init__(filters, kernel_size, padding="same", **kwargs)
            self.mask_type = mask

        def build(self, input_shape):
            super().build(input_shape)
            kh, kw = self.kernel_size
            mask = np.ones((kh, kw, int(input_shape[-1]), self.filters), np.float32)
            mask[kh // 2, kw // 2 + (self.mask_type == "B") :] = 0
            mask[kh // 2 + 1 :] = 0
            self.mask = mask

        def convolution_op(self, inputs, kernel):
            return super().convolution_op(inputs, kernel * self.mask)

    return MaskedConv2D


def pixel_cnn(x_train: np.ndarray, epochs: int = 15, filters: int = 32, seed: int = 0):
    """A small PixelCNN (van den Oord et al. 2016: masked convolutions, a 256-way softmax per input value) trained
    on float inputs in [0, 1], as the ART classifier PixelDefend reads; cached like the training defenses."""
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    from tinyrobust.model.zoo import cache_dir

    shape = tuple(x_train.shape[1:])
    masked = _masked_conv_class()
    _seed(seed)
    model = keras.Sequential([
        keras.Input(shape), masked(filters, 5, "A", activation="relu"), masked(filters, 3, "B", activation="relu"),
        masked(filters, 3, "B", activation="relu"), keras.layers.Conv2D(shape[-1] * 256, 1),
        keras.layers.Reshape((*shape, 256)), keras.layers.Softmax(),
    ])  # fmt: skip
    digest = hashlib.sha256(np.ascontiguousarray(x_train, np.float32).tobytes())
    digest.update(json.dumps([epochs, filters, seed]).encode())
    path = cache_dir() / "defenses" / f"pixelcnn-{digest.hexdigest()[:16]}.weights.h5"
    if path.is_file():
        model.load_weights(path)
    else:
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy())
        targets = np.clip(np.round(x_train * 255), 0, 255).astype(np.int32)
        model.fit(x_train.astype(np.float32), targets, epochs=epochs, batch_size=32, verbose=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(path)
    return TensorFlowV2Classifier(model, nb_classes=int(np.prod(shape)) * 256, input_shape=shape, clip_values=(0, 1))


# ---------------------------------------------------------------------------------------------------------
# Randomized smoothing: the device runs the network on n noisy copies of each input and answers with the votes.


@defense(
    "randomized-smoothing", "smoothing", "randomized smoothing (Cohen et al. 2019): the device runs the network on n "
    "copies of each input with Gaussian noise and answers with their votes; the host certifies an L2 radius "
    "sigma * Phi^-1(pA), pA the Clopper-Pearson lower bound of the top class's share, and abstains when pA <= 0.5",
    {"sigma": 0.25, "n": 32, "alpha": 0.001, "seed": 0},
    # Cohen et al.'s CIFAR-10 sigma and alpha, with as many copies as 16-bit votes count (the paper took 100,000)
    {"cohen2019": {"sigma": 0.25, "n": 65535, "alpha": 0.001}, "digits": {"sigma": 0.25, "n": 32, "alpha": 0.001}},
    meanings={"sigma": "the noise's standard deviation, in the model's float input units",
              "n": "noisy copies per input, 1 to 65535 (the votes are 16-bit counts)",
              "alpha": "the certificate fails with probability at most alpha",
              "seed": "the device's noise generator starts from it at every input"},
)  # fmt: skip
def randomized_smoothing(sigma: float, n: int, alpha: float, seed: int):
    from tinyrobust.compile.smoothing import Smoothing

    return Smoothing(sigma, n, seed, alpha)


# ---------------------------------------------------------------------------------------------------------
# Training defenses: each returns a new float Keras model; the input model is never modified.


def _seed(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # Python, numpy and TensorFlow generators
    tf.config.experimental.enable_op_determinism()


def _outputs_probabilities(model) -> bool:
    probe = np.asarray(model(np.zeros((2, *model.input_shape[1:]), np.float32)))
    return bool(np.all(probe >= 0) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-4))


def _copy(model, fresh: bool = False):
    """The model's architecture with its weights (or, fresh, newly initialized ones)."""
    import keras

    copy = keras.models.clone_model(model)
    if not fresh:
        copy.set_weights(model.get_weights())
    return copy


def _art_classifier(model, clip_values, learning_rate: float | None = None, soft_labels: bool = False):
    import keras
    import tensorflow as tf
    from art.estimators.classification import TensorFlowV2Classifier

    probabilities = _outputs_probabilities(model)
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=not probabilities)
        if soft_labels
        else keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
    )
    train_step = None
    if learning_rate:
        optimizer = keras.optimizers.Adam(learning_rate)

        # Traced once: ART's own training step is a new tf.function at every fit call, and its trainers call fit
        # once per batch, which made retracing most of the training time.
        @tf.function(reduce_retracing=True)
        def train_step(model, images, labels):
            with tf.GradientTape() as tape:
                value = loss(labels, model(images, training=True))
            gradients = tape.gradient(value, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    return TensorFlowV2Classifier(
        model, nb_classes=int(model.output_shape[-1]), input_shape=tuple(model.input_shape[1:]), loss_object=loss,
        train_step=train_step, clip_values=tuple(clip_values),
    )  # fmt: skip


TRAINING_DEFAULTS = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "clip_values": (0.0, 1.0)}


@defense(
    "pgd-training", "training", "adversarial training on PGD examples only, Madry et al.'s recipe (ART)",
    {**TRAINING_DEFAULTS, "eps": 0.1, "eps_step": 0.025, "max_iter": 5},
    {"mnist": {"eps": 0.3, "eps_step": 0.01, "max_iter": 40},
     "cifar": {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 7},
     "digits": {"eps": 0.1, "eps_step": 0.025, "max_iter": 5, "epochs": 10, "batch_size": 128}},
    meanings={"eps": "L-inf budget of the PGD examples", "eps_step": "PGD's step size", "max_iter": "PGD's steps"},
)  # fmt: skip
def pgd_training(model, x, y, seed, epochs, batch_size, learning_rate, clip_values, eps, eps_step, max_iter):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainer

    _seed(seed)
    trained = _copy(model)
    classifier = _art_classifier(trained, clip_values, learning_rate)
    # AdversarialTrainerMadryPGD's recipe (adversarial examples only, one random start), with the attack's batch
    # the training batch: its own fixed batch of 32 made the attack most of the training time.
    attack = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=eps_step, max_iter=max_iter, num_random_init=1,
        batch_size=batch_size, verbose=False,
    )  # fmt: skip
    AdversarialTrainer(classifier, attack, ratio=1.0).fit(x.astype(np.float32), y, nb_epochs=epochs,
                                                         batch_size=batch_size)  # fmt: skip
    return trained


@defense(
    "distillation", "training", "defensive distillation: a fresh model trained on the input model's soft labels at a "
    "temperature (ART DefensiveDistillation), deployed at temperature 1",
    {**TRAINING_DEFAULTS, "temperature": 20.0, "epochs": 20},
    {"papernot2016": {"temperature": 100.0, "epochs": 50},
     "digits": {"temperature": 20.0, "epochs": 40, "learning_rate": 3e-3}},
    meanings={"temperature": "softmax temperature of the soft labels and of the student's training"},
)  # fmt: skip
def distillation(model, x, y, seed, epochs, batch_size, learning_rate, clip_values, temperature):
    import keras
    from art.defences.transformer.evasion import DefensiveDistillation

    if _outputs_probabilities(model):
        raise UserError("defensive distillation needs a model that outputs logits (no final softmax)")
    _seed(seed)

    def at_temperature(m):
        inputs = keras.Input(m.input_shape[1:])
        return keras.Model(inputs, keras.layers.Softmax()(m(inputs) / temperature))

    student = _copy(model, fresh=True)
    teacher = _art_classifier(at_temperature(model), clip_values)
    transformed = _art_classifier(at_temperature(student), clip_values, learning_rate, soft_labels=True)
    DefensiveDistillation(teacher, batch_size=batch_size, nb_epochs=epochs)(x.astype(np.float32), transformed)
    return student


@defense(
    "ensemble-training", "training", "ensemble adversarial training: FGSM examples of the model itself and "
    "transferred from independently trained static models (ART AdversarialTrainer)",
    {**TRAINING_DEFAULTS, "eps": 0.1, "ratio": 0.5, "static_epochs": 10},
    {"mnist": {"eps": 0.3}, "cifar": {"eps": 16 / 255}, "digits": {"eps": 0.1, "epochs": 10, "static_epochs": 10}},
    meanings={"eps": "L-inf budget of the FGSM examples", "ratio": "share of each batch replaced by FGSM examples",
              "static_epochs": "training epochs of each static model"},
)  # fmt: skip
def ensemble_training(model, x, y, seed, epochs, batch_size, learning_rate, clip_values, eps, ratio, static_epochs):
    import keras
    from art.attacks.evasion import FastGradientMethod
    from art.defences.trainer import AdversarialTrainer

    _seed(seed)
    x = x.astype(np.float32)
    statics = [
        _copy(model, fresh=True),  # the same architecture, another initialization
        keras.Sequential([keras.Input(model.input_shape[1:]), keras.layers.Flatten(),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(model.output_shape[-1])]),
    ]  # fmt: skip
    attacks = []
    trained = _copy(model)
    classifier = _art_classifier(trained, clip_values, learning_rate)
    for static in [None, *statics]:
        if static is None:
            estimator = classifier
        else:
            estimator = _art_classifier(static, clip_values, learning_rate)
            estimator.fit(x, y, batch_size=batch_size, nb_epochs=static_epochs)
        attacks.append(FastGradientMethod(estimator, norm=np.inf, eps=eps, batch_size=128))
    AdversarialTrainer(classifier, attacks, ratio=ratio).fit(x, y, nb_epochs=epochs, batch_size=batch_size)
    return trained


@defense(
    "trades", "training", "TRADES: cross-entropy plus beta times the KL divergence between the outputs on clean and "
    "PGD inputs (ART's trainer is PyTorch only, so a TensorFlow loop of its own)",
    {**TRAINING_DEFAULTS, "eps": 0.1, "eps_step": 0.025, "max_iter": 5, "beta": 6.0},
    {"mnist": {"eps": 0.3, "eps_step": 0.01, "max_iter": 40, "beta": 6.0},
     "cifar": {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 10, "beta": 6.0},
     "digits": {"eps": 0.1, "eps_step": 0.025, "max_iter": 5, "beta": 6.0, "epochs": 10}},
    meanings={"eps": "L-inf budget of the inner PGD", "eps_step": "step size of the inner PGD",
              "max_iter": "steps of the inner PGD", "beta": "weight of the KL divergence against the cross-entropy"},
)  # fmt: skip
def trades(model, x, y, seed, epochs, batch_size, learning_rate, clip_values, eps, eps_step, max_iter, beta):
    import keras
    import tensorflow as tf

    _seed(seed)
    trained = _copy(model)
    probabilities = _outputs_probabilities(model)
    lo, hi = (float(v) for v in clip_values)
    optimizer = keras.optimizers.Adam(learning_rate)

    def log_probs(inputs, training):
        out = trained(inputs, training=training)
        return tf.math.log(tf.clip_by_value(out, 1e-12, 1.0)) if probabilities else tf.nn.log_softmax(out)

    def kl(clean_log, adv_log):  # KL(p_clean || p_adv) per sample
        return tf.reduce_sum(tf.exp(clean_log) * (clean_log - adv_log), axis=1)

    @tf.function
    def step(xb, yb, noise):
        clean_log = tf.stop_gradient(log_probs(xb, False))
        x_adv = tf.clip_by_value(xb + noise, lo, hi)
        for _ in range(max_iter):  # the inner maximization of the KL term, L-inf PGD
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = tf.reduce_sum(kl(clean_log, log_probs(x_adv, False)))
            x_adv = x_adv + eps_step * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - eps, xb + eps), lo, hi)
        x_adv = tf.stop_gradient(x_adv)
        with tf.GradientTape() as tape:
            natural = log_probs(xb, True)
            ce = -tf.reduce_mean(tf.gather(natural, yb, batch_dims=1))
            loss = ce + beta * tf.reduce_mean(kl(natural, log_probs(x_adv, True)))
        grads = tape.gradient(loss, trained.trainable_variables)
        optimizer.apply_gradients(zip(grads, trained.trainable_variables, strict=True))

    rng = np.random.default_rng(seed)
    x, y = x.astype(np.float32), y.astype(np.int64).reshape(-1)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            noise = (0.001 * rng.standard_normal(x[batch].shape)).astype(np.float32)
            step(tf.constant(x[batch]), tf.constant(y[batch]), tf.constant(noise))
    return trained


@defense(
    "sinkhorn-training", "training", "Sinkhorn adversarial training: adversarial training on Wasserstein examples, "
    "each made by steps projected on a Wasserstein ball with Sinkhorn iterations (Wong et al. 2019; ART Wasserstein); "
    "inputs must be non-negative (the projection treats them as mass)",
    {**TRAINING_DEFAULTS, "eps": 0.1, "eps_step": 0.1, "max_iter": 10, "eps_iter": 1, "eps_factor": 1.4,
     "regularization": 1000.0, "p": 1, "kernel_size": 5, "norm": "inf", "sinkhorn_max_iter": 50},
    # Wong et al.'s training scripts (their Sinkhorn iterations: 400 for MNIST, 10 for CIFAR-10)
    {"wong2019-mnist": {"eps": 0.1, "eps_step": 0.1, "max_iter": 10, "eps_iter": 1, "eps_factor": 1.4,
                        "regularization": 1000.0, "p": 1, "kernel_size": 5, "sinkhorn_max_iter": 400},
     "wong2019-cifar": {"eps": 0.1, "eps_step": 0.1, "max_iter": 10, "eps_iter": 1, "eps_factor": 1.5,
                        "regularization": 3000.0, "p": 1, "kernel_size": 5, "sinkhorn_max_iter": 10},
     "digits": {"max_iter": 3, "sinkhorn_max_iter": 10, "epochs": 3, "batch_size": 128}},
    meanings={"eps": "Wasserstein radius the examples start from (pixels moved, to the power p, per unit of mass)",
              "eps_step": "step size of each iteration, before the projection", "max_iter": "steps per example",
              "eps_iter": "steps after which the radius of the examples still classified right grows",
              "eps_factor": "factor by which that radius grows",
              "regularization": "entropy regularization of the Sinkhorn iterations (larger: closer to the exact "
                                "Wasserstein distance)",
              "p": "the p of the p-Wasserstein distance", "kernel_size": "side of the window mass moves within, in "
              "pixels", "norm": "norm of each step: inf (Wong et al.'s training), 2, 1 or wasserstein",
              "sinkhorn_max_iter": "Sinkhorn iterations of each projection (and of a Wasserstein step)"},
)  # fmt: skip
def sinkhorn_training(model, x, y, seed, epochs, batch_size, learning_rate, clip_values, eps, eps_step, max_iter,
                      eps_iter, eps_factor, regularization, p, kernel_size, norm, sinkhorn_max_iter):  # fmt: skip
    from art.attacks.evasion import Wasserstein
    from art.defences.trainer import AdversarialTrainer

    _seed(seed)
    trained = _copy(model)
    classifier = _art_classifier(trained, clip_values, learning_rate)
    # Adversarial examples only, as Wong et al. train; the attack's batch is the training batch (ART's default is 1).
    attack = Wasserstein(
        classifier, regularization=regularization, p=p, kernel_size=kernel_size, eps_step=eps_step, norm=str(norm),
        ball="wasserstein", eps=eps, eps_iter=eps_iter, eps_factor=eps_factor, max_iter=max_iter,
        conjugate_sinkhorn_max_iter=sinkhorn_max_iter, projected_sinkhorn_max_iter=sinkhorn_max_iter,
        batch_size=batch_size, verbose=False,
    )  # fmt: skip
    AdversarialTrainer(classifier, attack, ratio=1.0).fit(x.astype(np.float32), y, nb_epochs=epochs,
                                                         batch_size=batch_size)  # fmt: skip
    return trained


# ---------------------------------------------------------------------------------------------------------
# Cache of trained models, like zoo's: one folder per defense, model, data, parameters and seed.


def _cached(configured: Configured, keras_model, x: np.ndarray, y: np.ndarray, seed: int):
    import keras

    from tinyrobust.model.zoo import cache_dir

    digest = hashlib.sha256()
    for w in keras_model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    digest.update(np.ascontiguousarray(x, np.float32).tobytes() + np.ascontiguousarray(y, np.int64).tobytes())
    digest.update(json.dumps({"params": configured.params, "seed": seed}, sort_keys=True, default=str).encode())
    digest.update(keras_model.to_json().encode())
    path = cache_dir() / "defenses" / f"{configured.name}-{digest.hexdigest()[:16]}" / "float.keras"
    if path.is_file():
        return keras.models.load_model(path)
    trained = configured.defense.factory(keras_model, x, y, seed, **configured.params)
    path.parent.mkdir(parents=True, exist_ok=True)
    trained.save(path)
    return trained
