"""Optimizer and learning-rate schedule of the training binary, from Keras' own classes.

The ViT paper's recipes (Dosovitskiy et al., 2021, Section 4.1 and Appendix B.1): Adam/AdamW with
a linear warmup and a cosine or linear decay to zero when training from scratch, SGD with
momentum 0.9 when fine-tuning, gradients clipped at global norm 1 in both.

Example:

```python
schedule = create_learning_rate_schedule(
    "cosine", learning_rate=1e-3, total_steps=10_000, warmup_steps=500)
optimizer = create_optimizer("adamw", schedule, weight_decay=0.05, global_clipnorm=1.0)
```
"""

import keras

import keras_vit
from keras_vit.validation import check_choice, check_int, check_number, check_positive_int

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
# The momentum of the paper's fine-tuning SGD.
SGD_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_vit_training")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `warmup_target`, then another schedule.

    Keras' `CosineDecay` has a warmup built in; `PolynomialDecay` (the linear decay) and a
    constant rate do not, so they are wrapped in this one.

    Args:
        after: `LearningRateSchedule` or float. The rate from step `warmup_steps` on; a schedule
            is called with `step - warmup_steps`, so that it starts where the warmup ends.
        warmup_steps: int. Steps of the warmup; the rate at step s < warmup_steps is
            `warmup_target * s / warmup_steps`.
        warmup_target: float. The rate the warmup reaches.

    Example:

    >>> schedule = LinearWarmup(0.1, warmup_steps=10, warmup_target=0.1)
    >>> round(float(schedule(5)), 6)
    0.05
    """

    def __init__(self, after, warmup_steps, warmup_target):
        self.after = after
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup_steps = keras.ops.cast(self.warmup_steps, "float32")
        warmup = self.warmup_target * step / keras.ops.maximum(warmup_steps, 1.0)
        if isinstance(self.after, keras.optimizers.schedules.LearningRateSchedule):
            after = self.after(keras.ops.maximum(step - warmup_steps, 0.0))
        else:
            after = keras.ops.cast(self.after, "float32")
        return keras.ops.where(step < warmup_steps, warmup, after)

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {
            "after": after,
            "warmup_steps": self.warmup_steps,
            "warmup_target": self.warmup_target,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["after"], dict):
            config["after"] = keras.optimizers.schedules.deserialize(config["after"])
        return cls(**config)


def create_learning_rate_schedule(schedule, *, learning_rate, total_steps, warmup_steps=0):
    """Returns the learning rate as a function of the optimizer step.

    Args:
        schedule: str. `"cosine"` (to 0 at `total_steps`), `"linear"` (to 0 at `total_steps`) or
            `"constant"`, each after a linear warmup from 0.
        learning_rate: float. The peak rate, reached at the end of the warmup.
        total_steps: int. Optimizer steps of the whole run, warmup included.
        warmup_steps: int. Steps of the linear warmup; 0 for none. Defaults to 0.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`, or a float for a constant rate
        without warmup.

    Raises:
        ValueError: an unknown schedule, a non-positive rate or step count, or a warmup that
            does not end before `total_steps`.

    Example:

    >>> lr = create_learning_rate_schedule(
    ...     "cosine", learning_rate=1.0, total_steps=110, warmup_steps=10)
    >>> [round(float(lr(s)), 4) for s in (0, 5, 10, 60, 110)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    check_choice("schedule", schedule, SCHEDULES)
    check_number("learning_rate", learning_rate, low=0.0, low_open=True)
    check_positive_int("total_steps", total_steps)
    check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps >= total_steps and schedule != "constant":
        raise ValueError(
            f"warmup_steps {warmup_steps} must be smaller than the {total_steps} training steps "
            f"for the {schedule!r} schedule, which decays after the warmup"
        )
    decay_steps = total_steps - warmup_steps
    if schedule == "cosine":
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.0)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=decay_steps,
            alpha=0.0,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    if schedule == "linear":
        after = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, decay_steps, end_learning_rate=0.0, power=1.0
        )
    else:
        after = float(learning_rate)
        if warmup_steps == 0:
            return after
    return LinearWarmup(after, warmup_steps=warmup_steps, warmup_target=learning_rate)


def create_optimizer(
    name,
    learning_rate,
    *,
    weight_decay=0.0,
    global_clipnorm=None,
    no_decay_variables=None,
    loss_scale=False,
):
    """Returns a Keras optimizer for the paper's recipes.

    Weight decay is Keras' decoupled form (`w -= lr * weight_decay * w`, AdamW's) for every
    optimizer, so `adam` with a weight decay equals `adamw`.

    Args:
        name: str. `"adamw"`, `"adam"` or `"sgd"` (momentum 0.9).
        learning_rate: float or `LearningRateSchedule`, e.g. from
            `create_learning_rate_schedule`.
        weight_decay: float. Decoupled weight decay; 0 for none. Defaults to 0.
        global_clipnorm: float or None. Clip the gradients to this global norm. The training
            binary passes None and clips itself after the cross-replica sum (Keras clips each
            replica's share before summing); in a single-replica `model.fit` this is the
            paper's clipping. Defaults to None.
        no_decay_variables: list of variables to exempt from weight decay, e.g.
            `no_weight_decay_variables(model)`. Defaults to None (decay everything).
        loss_scale: bool. Wrap in `keras.optimizers.LossScaleOptimizer`, for `mixed_float16`.
            Defaults to False.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: an unknown name, a negative weight decay or a non-positive clip norm.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    check_number("weight_decay", weight_decay, low=0.0)
    if global_clipnorm is not None:
        check_number("global_clipnorm", global_clipnorm, low=0.0, low_open=True)
    common = dict(learning_rate=learning_rate, global_clipnorm=global_clipnorm)
    if name == "adamw":
        # AdamW insists on a float; the others take None for "no decay".
        optimizer = keras.optimizers.AdamW(weight_decay=float(weight_decay), **common)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(weight_decay=weight_decay or None, **common)
    else:
        optimizer = keras.optimizers.SGD(
            momentum=SGD_MOMENTUM, weight_decay=weight_decay or None, **common
        )
    if weight_decay and no_decay_variables:
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def no_weight_decay_variables(model):
    """The variables of a ViT that are conventionally not decayed.

    Biases and LayerNorm scales/offsets (every variable of rank <= 1), the [class] token and the
    position embeddings: decaying them pulls offsets and embeddings towards zero without
    regularizing anything (the DeiT and timm convention).

    Args:
        model: a `keras.Model`, e.g. from `keras_vit.ViT`.

    Returns:
        list of trainable variables.
    """
    embedding_layers = (keras_vit.layers.ClassToken, keras_vit.layers.PositionEmbedding)
    embeddings = {
        id(variable)
        for layer in model.layers
        if isinstance(layer, embedding_layers)
        for variable in layer.trainable_variables
    }
    return [
        variable
        for variable in model.trainable_variables
        if len(variable.shape) <= 1 or id(variable) in embeddings
    ]
