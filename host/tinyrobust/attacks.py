"""Evasion attacks from adversarial-robustness-toolbox (ART), run on the float model (white-box)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import UserError

# name -> ART attack for a classifier and an L-inf budget eps (in the float model's input units)
ATTACKS: dict[str, Callable] = {}


def attack(name: str):
    def register(factory: Callable) -> Callable:
        ATTACKS[name] = factory
        return factory

    return register


@attack("fgsm")
def fgsm(classifier, eps: float):
    from art.attacks.evasion import FastGradientMethod

    return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=128)


@attack("pgd")
def pgd(classifier, eps: float):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=20, num_random_init=1, batch_size=128,
        verbose=False,
    )  # fmt: skip


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack {', '.join(unknown)}; choose from: {', '.join(sorted(ATTACKS))}")


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


def generate(name: str, classifier, x: np.ndarray, y: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """Adversarial examples for inputs x with labels y, repeatable for a seed."""
    import tensorflow as tf

    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()  # multithreaded CPU reductions would otherwise vary
    return ATTACKS[name](classifier, eps).generate(x.astype(np.float32), y=y).astype(np.float32)
