"""Evasion attacks: a registry of small adapters over adversarial-robustness-toolbox (ART).

Each attack has a preset (ART's documented defaults, with iteration counts capped so that a 200-sample digits
campaign takes minutes; the "David and Goliath" study used ART with its defaults where it gives no value), and
every preset parameter can be overridden by name from a campaign config. What eps means differs by attack and
is stated by each one's `eps` field:

- "budget": eps is the attack's own perturbation budget in its norm (L-inf, or L2 for square_l2).
- "bound": a minimal-perturbation attack (DeepFool, C&W, EAD, JSMA, ZOO, Boundary, GeoDA, HopSkipJump) finds
  its own perturbation; eps then bounds it: every input element moves by at most eps (L-inf), so curves over
  eps compare with the budget attacks. eps 0 leaves the attack unbounded.

Gradient-free attacks (`queries` True) need only the model's outputs, so they can also query the quantized
model on the device itself (campaign mode "on-device")."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tinyrobust.errors import UserError


@dataclass(frozen=True)
class Attack:
    name: str
    make: Callable  # make(classifier, eps, **params) -> an ART evasion attack
    preset: dict = field(default_factory=dict)  # parameters passed to make unless the config sets them
    eps: str = "budget"  # "budget" or "bound" (see the module's docstring)
    norm: str = "inf"  # the norm the attack works in
    queries: bool = False  # gradient-free: can attack the device itself through its outputs
    min_side: int = 0  # the smallest image height and width the attack handles
    description: str = ""
    meanings: dict = field(default_factory=dict)  # what each preset parameter means, for `tinyrobust attacks`


ATTACKS: dict[str, Attack] = {}

# What a parameter means in every attack that has it; each attack's registration says what its others mean.
SHARED_MEANINGS = {
    "batch_size": "inputs the attack gives the model at once",
    "eps_step_fraction": "step size as a fraction of eps",
    "binary_search_steps": "steps of the binary search over the constant c",
    "initial_const": "first value of c, the weight of the misclassification loss against the distortion",
    "confidence": "margin by which another class must win (C&W's kappa)",
}


def attack(name: str, *, preset: dict | None = None, meanings: dict | None = None, **kind):
    """Register make(classifier, eps, **params) as the attack `name`; every preset parameter needs a meaning, its
    own in meanings or one of SHARED_MEANINGS."""

    def register(make: Callable) -> Callable:
        described = {key: (meanings or {}).get(key, SHARED_MEANINGS.get(key)) for key in preset or {}}
        unexplained = [key for key, meaning in described.items() if meaning is None]
        if unexplained:
            raise ValueError(f"attack {name} registers parameters without a meaning: {', '.join(unexplained)}")
        ATTACKS[name] = Attack(name, make, dict(preset or {}), description=(make.__doc__ or "").strip(),
                               meanings=described, **kind)  # fmt: skip
        return make

    return register


def _evasion(cls: str):
    import art.attacks.evasion

    return getattr(art.attacks.evasion, cls)


@attack("fgsm", preset={"batch_size": 128})
def fgsm(classifier, eps, **params):
    """Fast Gradient Sign Method (one L-inf step of size eps)."""
    return _evasion("FastGradientMethod")(classifier, norm=np.inf, eps=eps, **params)


@attack("bim", preset={"eps_step_fraction": 0.25, "max_iter": 20, "batch_size": 128},
        meanings={"max_iter": "iterations"})  # fmt: skip
def bim(classifier, eps, eps_step_fraction, **params):
    """Basic Iterative Method (iterated FGSM, projected on the L-inf ball; ART's max_iter 100 capped to 20)."""
    return _evasion("BasicIterativeMethod")(classifier, eps=eps, eps_step=eps * eps_step_fraction, verbose=False,
                                            **params)  # fmt: skip


@attack("pgd", preset={"eps_step_fraction": 0.25, "max_iter": 20, "num_random_init": 1, "batch_size": 128},
        meanings={"max_iter": "iterations",
                  "num_random_init": "random starts in the eps ball (0: at the input)"})  # fmt: skip
def pgd(classifier, eps, eps_step_fraction, **params):
    """Projected Gradient Descent, L-inf, from num_random_init random starts (ART's max_iter 100 capped to 20)."""
    return _evasion("ProjectedGradientDescent")(
        classifier, norm=np.inf, eps=eps, eps_step=eps * eps_step_fraction, verbose=False, **params
    )


@attack("autoattack", preset={"max_iter": 20, "square_max_iter": 100, "num_random_init": 1, "batch_size": 128},
        meanings={"max_iter": "iterations of each APGD run", "square_max_iter": "iterations of the Square attack",
                  "num_random_init": "random starts of each APGD run and restarts of Square"})  # fmt: skip
def autoattack(classifier, eps, max_iter, square_max_iter, num_random_init, batch_size):
    """AutoAttack, L-inf: APGD with cross-entropy and DLR losses, then Square; each sample keeps the first
    success (ART's iteration counts 100 and 5000 capped to 20 and 100). ART's own AutoAttack class needs the
    multiprocess package, so the ensemble is run here, in AutoAttack's order."""
    apgd = _evasion("AutoProjectedGradientDescent")
    common = {"norm": np.inf, "eps": eps, "batch_size": batch_size, "verbose": False}
    members = [
        apgd(classifier, loss_type=loss, max_iter=max_iter, eps_step=2 * eps, nb_random_init=num_random_init,
             **common)
        for loss in ("cross_entropy", "difference_logits_ratio")
    ]  # fmt: skip
    members.append(
        _evasion("SquareAttack")(classifier, max_iter=square_max_iter, nb_restarts=num_random_init, **common)
    )
    return _FirstSuccess(classifier, members)


class _FirstSuccess:
    """Run attacks in turn on the samples still classified correctly; each sample keeps the first success."""

    def __init__(self, classifier, members):
        self.classifier, self.members = classifier, members

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        labels = y.argmax(axis=1) if y.ndim == 2 else y
        x_adv = x.copy()
        for member in self.members:
            left = np.flatnonzero(self.classifier.predict(x_adv).argmax(axis=1) == labels)
            if not len(left):
                break
            x_adv[left] = member.generate(x[left], y=y[left])
        return x_adv


CW_L2_PRESET = {"binary_search_steps": 5, "max_iter": 10, "learning_rate": 0.01, "initial_const": 0.01,
                "confidence": 0.0, "batch_size": 128}  # fmt: skip


@attack("cw_l2", preset=CW_L2_PRESET, eps="bound", norm="2", meanings={
    "max_iter": "gradient steps per search step",
    "learning_rate": "first step size (ART adapts it by line search)"})  # fmt: skip
def cw_l2(classifier, eps, **params):
    """Carlini and Wagner, L2 (ART's 10 binary search steps reduced to 5)."""
    return _evasion("CarliniL2Method")(classifier, verbose=False, **params)


CW_LINF_PRESET = {"max_iter": 5, "learning_rate": 0.1, "decrease_factor": 0.5, "initial_const": 0.01,
                  "largest_const": 2.0, "const_factor": 4.0, "confidence": 0.0, "batch_size": 128}  # fmt: skip


@attack("cw_linf", preset=CW_LINF_PRESET, eps="bound", meanings={
    "max_iter": "gradient steps per value of tau and c", "learning_rate": "step size",
    "decrease_factor": "factor that shrinks the L-inf bound tau after each success",
    "largest_const": "largest value of c tried",
    "const_factor": "factor that raises c while no example is found"})  # fmt: skip
def cw_linf(classifier, eps, **params):
    """Carlini and Wagner, L-inf. ART runs it one sample at a time through nested searches over tau and the
    constant; its defaults (tau x0.9, constant 1e-5 to 20 by x2, 10 iterations) cost ~10,000 gradients per
    sample, so tau halves, the constant goes 0.01 to 2 by x4 and 5 iterations are made, with steps of 0.1
    instead of 0.01: at 0.01 five steps leave the inputs as they were."""
    return _evasion("CarliniLInfMethod")(classifier, verbose=False, **params)


@attack("deepfool", preset={"max_iter": 50, "epsilon": 1e-6, "nb_grads": 10, "batch_size": 128}, eps="bound",
        norm="2", meanings={"max_iter": "linearization steps", "epsilon": "overshoot past the boundary (not a budget)",
                            "nb_grads": "classes (highest scores first) whose gradients are computed"})  # fmt: skip
def deepfool(classifier, eps, **params):
    """DeepFool, L2 (ART's max_iter 100 capped to 50; epsilon is its overshoot, not a budget)."""
    return _evasion("DeepFool")(classifier, verbose=False, **params)


EAD_PRESET = {"binary_search_steps": 3, "max_iter": 10, "beta": 1e-3, "learning_rate": 0.01, "initial_const": 1e-2,
              "decision_rule": "EN", "batch_size": 128}  # fmt: skip


@attack("ead", preset=EAD_PRESET, eps="bound", norm="1", meanings={
    "max_iter": "iterations per search step", "beta": "weight of the L1 distortion against the L2 one",
    "learning_rate": "first step size (it decays)",
    "decision_rule": "distortion that picks the best example: EN, L1 or L2"})  # fmt: skip
def ead(classifier, eps, **params):
    """Elastic-net attack (EAD), L1 + L2 (ART's 9 search steps and 100 iterations reduced to 3 and 10; the
    constant starts at 1e-2 instead of 1e-3, so that three search steps reach where ART's nine would)."""
    return _evasion("ElasticNet")(classifier, verbose=False, **params)


@attack("jsma", preset={"theta": 0.1, "gamma": 1.0, "batch_size": 128}, eps="bound", norm="0",
        meanings={"theta": "change of each chosen input element per step, in input units",
                  "gamma": "largest fraction of the input elements that may change"})  # fmt: skip
def jsma(classifier, eps, **params):
    """Jacobian saliency map attack (JSMA), L0, towards a random other class (seeded): changes few features by
    theta each (ART's defaults)."""
    return _evasion("SaliencyMapMethod")(classifier, verbose=False, **params)


ZOO_PRESET = {"max_iter": 100, "binary_search_steps": 1, "learning_rate": 0.1, "initial_const": 1e-3,
              "nb_parallel": 16, "use_resize": False, "use_importance": False, "batch_size": 1,
              "variable_h": 1e-4}  # fmt: skip


@attack("zoo", preset=ZOO_PRESET, eps="bound", norm="2", queries=True, meanings={
    "max_iter": "iterations per search step", "learning_rate": "step size of the coordinate updates",
    "nb_parallel": "coordinates estimated and updated per iteration, two queries each",
    "use_resize": "attack a downscaled input first, then enlarge it (for large images)",
    "use_importance": "choose coordinates by importance instead of at random",
    "variable_h": "step h of the finite differences that estimate the gradient"})  # fmt: skip
def zoo(classifier, eps, **params):
    """Zeroth-order optimization (ZOO), C&W's L2 loss with estimated gradients. ART's 10 iterations at learning
    rate 0.01 leave digits untouched, so 100 at 0.1; nb_parallel 128 reduced to 16 coordinates per iteration;
    resizing and importance sampling off, as they are for large images. About 2 x nb_parallel queries per
    iteration and sample."""
    return _evasion("ZooAttack")(classifier, verbose=False, **params)


SQUARE_MEANINGS = {
    "max_iter": "iterations, one random square tried per sample each",
    "p_init": "fraction of the input the first squares cover (it shrinks)",
    "nb_restarts": "restarts",
}


@attack("square_linf", preset={"max_iter": 100, "p_init": 0.8, "nb_restarts": 1, "batch_size": 128},
        queries=True, meanings=SQUARE_MEANINGS)  # fmt: skip
def square_linf(classifier, eps, **params):
    """Square attack, L-inf (ART's defaults)."""
    return _evasion("SquareAttack")(classifier, norm=np.inf, eps=eps, verbose=False, **params)


# ART's Square L2 starts from a 5 x 5 grid of tiles height // 5 pixels high: under 10 pixels a tile is one pixel,
# whose normalized pattern is 0 / 0, and every sample comes back NaN.
@attack("square_l2", preset={"max_iter": 100, "p_init": 0.8, "nb_restarts": 1, "batch_size": 128}, norm="2",
        queries=True, min_side=10, meanings=SQUARE_MEANINGS)  # fmt: skip
def square_l2(classifier, eps, **params):
    """Square attack, L2 (eps is an L2 budget; ART's defaults)."""
    return _evasion("SquareAttack")(classifier, norm=2, eps=eps, verbose=False, **params)


BOUNDARY_PRESET = {"max_iter": 50, "num_trial": 10, "sample_size": 10, "init_size": 100, "delta": 0.01,
                   "epsilon": 0.01, "step_adapt": 0.667, "batch_size": 64}  # fmt: skip


@attack("boundary", preset=BOUNDARY_PRESET, eps="bound", norm="2", queries=True, meanings={
    "max_iter": "iterations", "num_trial": "trials per iteration and step", "sample_size": "random steps per trial",
    "init_size": "random inputs tried to find an adversarial start", "delta": "first size of the step along the "
    "boundary", "epsilon": "first size of the step towards the input", "step_adapt": "factor (0 to 1) that adapts "
    "both step sizes"})  # fmt: skip
def boundary(classifier, eps, **params):
    """Boundary attack, untargeted (ART's 5000 iterations, 25 trials and 20 samples capped to 50, 10 and 10)."""
    return _evasion("BoundaryAttack")(classifier, targeted=False, verbose=False, **params)


GEODA_PRESET = {"max_iter": 400, "sub_dim": 4, "bin_search_tol": 0.1, "lambda_param": 0.6, "sigma": 0.0002,
                "norm": 2, "batch_size": 64}  # fmt: skip


@attack("geoda", preset=GEODA_PRESET, eps="bound", norm="2", queries=True, meanings={
    "max_iter": "queries per sample, spread over the iterations (at least 250)",
    "sub_dim": "side of the low-frequency DCT subspace the directions are drawn from",
    "bin_search_tol": "binary search stops when the L2 step left is below this",
    "lambda_param": "how queries are spread over iterations (0: one iteration, 1: evenly)",
    "sigma": "variance of the Gaussian probes", "norm": "norm minimized: 2, inf or 1"})  # fmt: skip
def geoda(classifier, eps, **params):
    """GeoDA, geometric decision-based attack (ART's 4000 queries capped to 400, ART needs 250 at least;
    sub_dim 4 for 8x8 inputs)."""
    import art.attacks.evasion.geometric_decision_based_attack as module

    module.np = _NumpyForGeoDA()
    return _evasion("GeoDA")(classifier, verbose=False, **params)


class _NumpyForGeoDA:
    """NumPy as ART 1.20's GeoDA module sees it: with np.mat, which NumPy 2 removed, and without np.save, with
    which it would leave its DCT basis as a file in the working directory."""

    mat = staticmethod(np.asmatrix)

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def save(*args, **kwargs) -> None:
        pass


HOPSKIPJUMP_PRESET = {"max_iter": 10, "max_eval": 1000, "init_eval": 100, "init_size": 100, "norm": 2,
                      "batch_size": 64}  # fmt: skip


@attack("hopskipjump", preset=HOPSKIPJUMP_PRESET, eps="bound", norm="2", queries=True, meanings={
    "max_iter": "iterations", "max_eval": "most queries for one gradient estimate",
    "init_eval": "queries for the first gradient estimate",
    "init_size": "random inputs tried to find an adversarial start", "norm": "norm minimized: 2 or inf"})  # fmt: skip
def hopskipjump(classifier, eps, **params):
    """HopSkipJump, untargeted (ART's max_iter 50 and max_eval 10000 capped to 10 and 1000)."""
    return _evasion("HopSkipJump")(classifier, targeted=False, verbose=False, **params)


def check_input(name: str, shape: tuple[int, ...], model: str) -> None:
    """Refuse an attack the model's inputs (height, width, channels) are too small for."""
    side = ATTACKS[name].min_side
    if side and len(shape) == 3 and min(shape[:2]) < side:
        raise UserError(f"attack {name} needs images at least {side} pixels on a side, and {model}'s are "
                        f"{shape[0]} x {shape[1]}; leave it out for this model")  # fmt: skip


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack {', '.join(unknown)}; choose from: {', '.join(sorted(ATTACKS))}")


def parameters(name: str, overrides: dict | None = None, prefix: str = "") -> dict:
    """The attack's preset with a config's overrides; an unknown parameter is refused, naming the allowed ones."""
    preset = ATTACKS[name].preset
    unknown = sorted(set(overrides or {}) - set(preset))
    if unknown:
        raise UserError(
            f"{prefix}attack {name} has no parameter {', '.join(unknown)}; its parameters are: {', '.join(preset)}"
        )
    return {**preset, **(overrides or {})}


def classifier(keras_model, clip_values: tuple[float, float]):
    """Wrap a Keras model for ART; a model ending in softmax gets a probability loss, otherwise a logit loss."""
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    input_shape = tuple(keras_model.input_shape[1:])
    probe = np.asarray(keras_model(np.zeros((2,) + input_shape, np.float32)))
    probabilities = bool(np.all(probe >= 0) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-4))
    return TensorFlowV2Classifier(
        keras_model,
        nb_classes=probe.shape[1],
        input_shape=input_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities),
        clip_values=clip_values,
    )


def query_classifier(predict: Callable, input_shape: tuple, nb_classes: int, clip_values: tuple[float, float]):
    """An ART black-box classifier over predict(x float batch) -> scores: how gradient-free attacks query the
    device."""
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    # The neural-network flavour, which Square requires; channels last, as the models here take them.
    return BlackBoxClassifierNeuralNetwork(predict, input_shape, nb_classes, channels_first=False,
                                           clip_values=clip_values)  # fmt: skip


def generate(
    name: str, classifier, x: np.ndarray, y: np.ndarray, eps: float, seed: int, params: dict | None = None
) -> np.ndarray:
    """Adversarial examples for inputs x with labels y, repeatable for a seed; a "bound" attack's perturbation
    is clipped to eps (L-inf) when eps > 0."""
    return bound(name, x, unbounded(name, classifier, x, y, eps, seed, params), eps, classifier.clip_values)


def unbounded(
    name: str, classifier, x: np.ndarray, y: np.ndarray, eps: float, seed: int, params: dict | None = None
) -> np.ndarray:
    """The attack's own output: what generate returns before a "bound" attack is bounded (for those, eps is not
    used here, so one run serves every eps)."""
    import random

    import tensorflow as tf

    spec = ATTACKS[name]
    check_input(name, x.shape[1:], "the model")
    random.seed(seed)  # Square L2 draws from Python's generator
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()  # multithreaded CPU reductions would otherwise vary
    x = x.astype(np.float32)
    labels = y
    if name in ("boundary", "geoda", "hopskipjump", "zoo", "square_linf", "square_l2", "autoattack"):
        labels = np.eye(classifier.nb_classes, dtype=np.float32)[y]  # these want one-hot labels
    elif name == "jsma":
        labels = None  # JSMA is targeted: without labels ART draws a random target class other than the predicted
    with _seeded_random_states():
        return spec.make(classifier, eps, **parameters(name, params)).generate(x, y=labels).astype(np.float32)


@contextmanager
def _seeded_random_states():
    """Boundary and HopSkipJump draw their starting points from np.random.RandomState() without a seed; while
    an attack runs, such a generator is seeded from the global one (seeded per run), so that runs repeat."""
    original = np.random.RandomState

    def seeded(*args, **kwargs):
        return original(*args, **kwargs) if args or kwargs else original(np.random.randint(2**31))

    np.random.RandomState = seeded
    try:
        yield
    finally:
        np.random.RandomState = original


def bound(name: str, x: np.ndarray, x_adv: np.ndarray, eps: float, clip_values) -> np.ndarray:
    """x_adv inside the input range, finite, and for a "bound" attack with eps > 0 within eps of x (L-inf)."""
    x_adv = np.where(np.isfinite(x_adv), x_adv, x)  # an attack that diverged leaves the input as it was
    if ATTACKS[name].eps == "bound" and eps > 0:
        x_adv = np.clip(x_adv, x - eps, x + eps)
    lo, hi = clip_values
    return np.clip(x_adv, lo, hi).astype(np.float32)
