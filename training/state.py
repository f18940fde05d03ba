"""The training state of a run, created in one place: model, optimizer, schedule, counters.

`create_state` builds everything a training step reads or updates, inside the strategy's scope,
and the `tf.train.Checkpoint` that saves it; `restore` fills it from the run's latest checkpoint.
Nothing here writes files.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import keras_vit
from keras_vit import checkpoints, finetune, hub, lora, model_layers
from training import checkpointing, model_loading, optim


@dataclasses.dataclass
class TrainState:
    """What a training step reads and updates, and its checkpoint.

    Attributes:
        model: the `keras.Model` being trained (its variables are the strategy's).
        optimizer: `keras.optimizers.Optimizer`, built for the model's trainable variables.
        schedule: the learning rate, a `LearningRateSchedule` or a float.
        step: int64 `tf.Variable`, optimizer steps done (as of the last checkpoint).
        epoch: int64 `tf.Variable`, completed epochs (as of the last checkpoint).
        checkpoint: `tf.train.Checkpoint` of the four above.
    """

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: object
    step: tf.Variable
    epoch: tf.Variable
    checkpoint: tf.train.Checkpoint

    def learning_rate(self, step):
        """float: the learning rate of the optimizer step `step` (counting from 0)."""
        schedule = self.schedule
        return float(schedule(step)) if callable(schedule) else float(schedule)


def load_pretrained(config):
    """The model of `config.init_from`, or None (no init_from, or a `.weights.h5`).

    A `.keras` model, or a Hub checkpoint (`hf://ORG/NAME`, a folder with `config.json` and
    safetensors) built as its config states; `create_model` adapts either to the run.
    """
    if config.init_from is not None and config.init_from.endswith(".keras"):
        return model_loading.load_model(config.init_from)
    if config.init_from is not None and hub.is_reference(config.init_from):
        checkpoint = _with_bias_for_folding(checkpoints.read_checkpoint(config.init_from))
        model = keras_vit.ViT(weights=checkpoint)
        arch = checkpoint.architecture
        if arch.mean is not None:
            # The input pipeline feeds x / 127.5 - 1; the checkpoint was trained on its own
            # mean and std: the change is folded into the patch embedding, exactly.
            finetune.fold_input_normalization(model, arch.mean, arch.std)
            logging.info("%s: its input normalization (mean %s, std %s) folded into the "
                         "patch embedding, for [-1, 1] inputs", config.init_from, arch.mean,
                         arch.std)
        return model
    return None


def _with_bias_for_folding(checkpoint):
    """`checkpoint`, with a zero patch-embedding bias where its input normalization needs one.

    A patch embedding without bias (CLIP's) has nowhere to take the shift of a mean other than
    0.5 (`finetune.fold_input_normalization`); the model gets a bias, zero, which the folding
    then sets: one D-vector more, the same outputs.
    """
    arch = checkpoint.architecture
    if arch.mean is None or arch.spec.patch_bias or all(m == 0.5 for m in arch.mean):
        return checkpoint
    width = arch.spec.hidden_dim
    return dataclasses.replace(
        checkpoint,
        architecture=dataclasses.replace(arch, spec=dataclasses.replace(arch.spec,
                                                                        patch_bias=True)),
        arrays={**checkpoint.arrays, "embedding/bias": np.zeros((width,), "float32")},
        sources={**checkpoint.sources,
                 "embedding/bias": "(zeros: a bias for the folded input normalization)"},
    )


def variant_of(model):
    """The variant name of `model`'s architecture: "SIZE/PATCH" when a size of
    `keras_vit.variants.SIZES` has its width, depth, MLP and heads, else a description
    ("width 48, depth 3, MLP 96, 4 heads/8"); "R50+..." style hybrids prefixed "hybrid+".
    """
    from keras_vit import variants

    embedding = model_layers.find_layer(model, "patch_embedding")
    blocks = model_layers.transformer_blocks(model)
    block = blocks[0].get_config()
    shape = dict(hidden_dim=embedding.hidden_dim, depth=len(blocks), mlp_dim=block["mlp_dim"],
                 num_heads=block["num_heads"])
    size = next((name for name, spec in variants.SIZES.items() if spec == shape),
                f"width {shape['hidden_dim']}, depth {shape['depth']}, MLP {shape['mlp_dim']}, "
                f"{shape['num_heads']} heads")
    hybrid = "hybrid+" if model_layers.find_layer(model, "conv_root") is not None else ""
    return f"{hybrid}{size}/{embedding.patch_size}"


def create_state(config, info, *, total_steps, strategy, pretrained=None):
    """Creates the model, optimizer and counters of a run in `strategy`'s scope.

    Args:
        config: validated `training.config.Config`.
        info: `training.input_pipeline.DatasetInfo` of the run's dataset.
        total_steps: int. Optimizer steps of the whole run (the schedule's length).
        strategy: `tf.distribute.Strategy`.
        pretrained: `keras.Model` or None, from `load_pretrained(config)`.

    Returns:
        A `TrainState`.

    Raises:
        ValueError: a model that cannot be built or adapted as `config` says.
    """
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = create_model(config, info, pretrained)
        schedule = optim.create_learning_rate_schedule(
            config.schedule,
            learning_rate=config.learning_rate,
            total_steps=total_steps,
            warmup_steps=config.warmup_steps,
        )
        optimizer = optim.create_optimizer(
            config.optimizer,
            schedule,
            weight_decay=config.weight_decay,
            # Clipped in the training step, after the sum over replicas (training/steps.py).
            global_clipnorm=None,
            no_decay_variables=optim.no_weight_decay_variables(model),
            loss_scale=config.mixed_precision == "float16",
        )
        # Built now, so that a restore fills the slot variables directly.
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = checkpointing.create_checkpoint(model, optimizer, step, epoch)
    return TrainState(model, optimizer, schedule, step, epoch, checkpoint)


def create_model(config, info, pretrained=None):
    """The run's model: `pretrained` adapted to the run, or a new `keras_vit.ViT`.

    A pre-trained model keeps its head when it has the dataset's classes (e.g. a higher
    resolution only) and gets a zero head otherwise (`keras_vit.finetune.head_plan`).
    """
    if pretrained is not None:
        same_classes = finetune.head_plan(
            source_classes=model_layers.num_classes(pretrained),
            target_classes=info.num_classes,
        ) == "keep"
        try:
            model = finetune.adapt(
                pretrained,
                image_size=config.image_size,
                num_classes=None if same_classes else info.num_classes,
                position_embeddings=config.init_position_embeddings,
            )
        except ValueError as error:
            raise ValueError(f"Cannot fine-tune {config.init_from!r}: {error}") from None
        for block in model_layers.transformer_blocks(model):
            block.remat = config.remat  # read at each call: the run's setting, not the file's
        _enable_lora(config, model)
        logging.info(
            "Fine-tuning %s (%s, input %s -> %s): %s", config.init_from, pretrained.name,
            pretrained.input_shape[1:3], model.input_shape[1:3],
            "head kept" if same_classes else
            f"new zero-initialized head for {info.num_classes} classes")
        return model
    if config.init_position_embeddings != "interpolate":
        raise ValueError(
            f"init_position_embeddings={config.init_position_embeddings!r} needs init_from "
            f"to be a '.keras' model, received init_from={config.init_from!r}")
    model = keras_vit.ViT(
        config.variant,
        image_size=config.image_size,
        num_classes=info.num_classes,
        pooling=config.pooling,
        representation_size=config.representation_size or None,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        drop_path_rate=config.drop_path_rate,
        remat=config.remat,
        weights=config.init_from,
        num_channels=info.channels,
    )
    _enable_lora(config, model)
    return model


def _enable_lora(config, model):
    # Before the optimizer is built: it takes the trainable variables LoRA leaves.
    if not config.lora_rank:
        return
    finetune.enable_lora(model, config.lora_rank, targets=config.lora_targets,
                         train_norms=config.lora_train_norms)
    trainable, total = lora.count_parameters(model)
    logging.info("LoRA rank %d on %s: %d of %d weights trainable (%.2f%%)", config.lora_rank,
                 config.lora_targets, trainable, total, 100 * trainable / total)


def restore(state, workdir):
    """Restores `state` from `workdir`'s newest readable checkpoint; returns its step (0 if none).

    Raises:
        ValueError: the checkpoint does not match the state (another model or optimizer), or
            none can be read (`training.checkpointing.restore_latest`).
    """
    latest = checkpointing.restore_latest(state.checkpoint, workdir)
    if latest is None:
        return 0
    step = int(state.step.numpy())
    logging.info("Resuming from %s: step %d, epoch %d", latest, step, int(state.epoch.numpy()))
    return step
