"""The training and evaluation steps of a run, as `tf.function`s over a `tf.distribute` strategy.

A step is `strategy.run` of a per-replica function inside a `tf.function`; each returns
per-replica sums (loss, correct predictions, examples; the gradient norm for training) reduced
over the replicas with `strategy.reduce`, so the loop never sees per-replica values. The step
functions hold no Python state: the model, the optimizer and the data iterator are their
inputs, and everything they change is a TensorFlow variable in the run's `TrainState`.

With `accumulation_steps` N > 1 (gradient accumulation), each replica splits its share of the
global batch into N equal micro-batches, sums their gradients in a while loop, and then takes
the one-batch path: the replicas' sum, the global-norm clip and one optimizer update. The update
is that of the whole global batch (up to float summation order), with one micro-batch's
activations in memory; one call of `train` is still one optimizer step.
"""

import collections

import keras
import tensorflow as tf

StepFunctions = collections.namedtuple("StepFunctions", ["train", "evaluate", "all_finite"])
StepFunctions.__doc__ = """The compiled steps of a run.

Attributes:
    train: `train(iterator, stop)` -> dict of float32 scalars: one optimizer step on the next
        global batch (all its micro-batches with gradient accumulation); `loss_sum`, `correct`,
        `count` (summed over the batch), `grad_norm` (of the true gradient of the mean loss
        over the whole batch, before clipping) and `stop_requests`: the sum over every replica
        of the float32 scalar `stop` (1.0 where this process was asked to stop, else 0.0), so
        that every worker of a cluster learns of a stop request at the same step
        (`training/preemption.py`).
    evaluate: `evaluate(batch)` -> dict with `loss_sum`, `correct` and `count`.
    all_finite: `all_finite()` -> bool tensor: every trainable weight is finite.
"""


def create_step_functions(config, state, strategy):
    """Returns the `StepFunctions` of `state` under `strategy`, as `config` says.

    Args:
        config: `training.config.Config`: the global batch size, the accumulation steps,
            label smoothing, gradient clipping and `jit_compile` are read from it.
        state: `training.state.TrainState`.
        strategy: `tf.distribute.Strategy` the state was created under.
    """
    model, optimizer = state.model, state.optimizer
    replicas = strategy.num_replicas_in_sync
    global_batch_size = config.global_batch_size
    clip_norm = config.grad_clip_norm
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    accumulation_steps = config.accumulation_steps

    def batch_gradients(images, labels, **gradient_kwargs):
        """This batch's gradients of its share of the mean loss (loss-scaled), and its sums."""
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=config.label_smoothing
            )
            # Divided by the global batch, not the replica's (or the micro-batch's): the sum
            # over replicas and micro-batches of the gradients is then the gradient of the mean
            # loss over the global batch.
            loss = tf.reduce_sum(per_example) / global_batch_size
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables, **gradient_kwargs)
        return grads, batch_sums(per_example, logits, labels)

    def accumulated_gradients(images, labels):
        """`batch_gradients` of the replica's batch, summed over its micro-batches.

        The micro-batches run one after another in a while loop (parallel_iterations=1), so
        that only one micro-batch's activations are alive at a time; the sums are float32
        tensors, not variables, so one step is still exactly one update and a checkpoint
        never holds a partial sum.
        """
        micro_images = tf.reshape(images, [accumulation_steps, -1, *images.shape[1:]])
        micro_labels = tf.reshape(labels, [accumulation_steps, -1, *labels.shape[1:]])
        variables = model.trainable_variables

        def body(i, grads, sums):
            micro_grads, micro_sums = batch_gradients(
                micro_images[i], micro_labels[i],
                unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = [total + tf.cast(tf.convert_to_tensor(grad), tf.float32)
                     for total, grad in zip(grads, micro_grads)]
            return i + 1, grads, {key: sums[key] + micro_sums[key] for key in sums}

        zeros = [tf.zeros(variable.shape, tf.float32) for variable in variables]
        no_sums = {key: tf.constant(0.0) for key in ("loss_sum", "correct", "count")}
        _, grads, sums = tf.while_loop(
            lambda i, *_: i < accumulation_steps, body, (tf.constant(0), zeros, no_sums),
            parallel_iterations=1)
        grads = [tf.cast(grad, tf.as_dtype(variable.dtype))
                 for grad, variable in zip(grads, variables)]
        return grads, sums

    def replica_train_step(images, labels, stop):
        if accumulation_steps == 1:
            grads, sums = batch_gradients(images, labels)
        else:
            grads, sums = accumulated_gradients(images, labels)
        variables = model.trainable_variables
        # The paper clips the global norm of the whole batch's gradient. Keras' optimizers clip
        # before they sum the replicas' gradients, i.e. each replica's share, so the sum and the
        # clip happen here, and the optimizer gets each replica's 1/replicas of the clipped sum
        # (its own all-reduce adds them back up; with one replica both reductions are no-ops).
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        scale = tf.cast(optimizer.scale_loss(1.0), tf.float32) if loss_scaled else 1.0
        grad_norm = tf.linalg.global_norm(grads)
        if clip_norm > 0:
            # Under loss scaling the gradients are scaled by `scale`: clipping them at
            # clip_norm * scale clips the true gradients at clip_norm.
            grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale, use_norm=grad_norm)
        if replicas > 1:
            grads = [grad / replicas for grad in grads]
        optimizer.apply_gradients(zip(grads, variables))
        return sums | {
            "grad_norm": grad_norm / scale / replicas,
            # Rides on the step's reductions: no collective operation of its own. An op per
            # replica (identity): MirroredStrategy cannot reduce the one input tensor itself.
            "stop_requests": tf.identity(stop),
        }

    def replica_eval_step(images, labels):
        logits = model(images, training=False)
        per_example = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
        return batch_sums(per_example, logits, labels)

    if config.jit_compile:
        # As Keras' own trainer does: XLA compiles the per-replica computation, and the
        # strategy's placement and reductions stay outside it.
        replica_train_step = tf.function(replica_train_step, jit_compile=True)
        replica_eval_step = tf.function(replica_eval_step, jit_compile=True)

    def reduce_sums(per_replica):
        return {
            key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for key, value in per_replica.items()
        }

    @tf.function
    def train(iterator, stop):
        images, labels = next(iterator)
        return reduce_sums(strategy.run(replica_train_step, args=(images, labels, stop)))

    @tf.function(reduce_retracing=True)
    def evaluate(batch):
        return reduce_sums(strategy.run(replica_eval_step, args=batch))

    @tf.function
    def all_finite():
        return tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables]
        )

    return StepFunctions(train, evaluate, all_finite)


def batch_sums(per_example_loss, logits, labels):
    """Per-replica sums that add up across replicas: loss, correct predictions, examples."""
    correct = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(labels, axis=-1))
    return {
        "loss_sum": tf.reduce_sum(tf.cast(per_example_loss, tf.float32)),
        "correct": tf.reduce_sum(tf.cast(correct, tf.float32)),
        "count": tf.cast(tf.shape(labels)[0], tf.float32),
    }
