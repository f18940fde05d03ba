"""Every command-line flag of the binaries, defined in this one module.

`python -m training.train` calls `define_training_flags()`, `python -m training.export` calls
`define_export_flags()` (`training.inspect`: `define_inspect_flags()`, `training.fewshot`:
`define_fewshot_flags()`, `training.convert`: `define_convert_flags()`), each before
`app.run`; library code never reads flags. Training flags
mirror the fields of `training.config.Config` one to one, and take their defaults from it, so
`python -m training.train --workdir=DIR` and `train_and_evaluate(Config(), DIR)` are the same run.
"""

from absl import flags

from training import distribute, optim
from training.config import (
    FINETUNE_DEFAULTS,
    MIXED_PRECISION,
    POOLINGS,
    POSITION_EMBEDDING_INITS,
    Config,
)

FLAGS = flags.FLAGS

_D = Config()

# (name, kind, help) in the order of Config; the default is Config's.
_TRAINING_FLAGS = (
    # Data.
    ("dataset", "string", "TFDS image-classification dataset (features 'image' and 'label'); "
     "'digits' ships with the project and needs no download."),
    ("data_dir", "string", "TFDS data directory; unset: TFDS's default (~/tensorflow_datasets)."),
    ("train_split", "string", "TFDS split to train on, e.g. 'train' or 'train[:90%]'."),
    ("eval_split", "string", "TFDS split to evaluate on; unset: 'test', else 'validation'."),
    ("shuffle_buffer", "integer", "Examples in the training shuffle buffer."),
    # Model.
    ("variant", "string", "keras_vit variant SIZE/PATCH, SIZE in mu, Ti, S, M, B, L, H."),
    ("image_size", "integer", "Side of the square images the model sees (inputs are resized)."),
    ("pooling", "enum", "'token': the [class] token; 'gap': mean of the patch tokens."),
    ("representation_size", "integer", "Width of the pre-logits Dense+tanh layer; 0: none."),
    ("dropout", "float", "Dropout rate in the encoder."),
    ("attention_dropout", "float", "Dropout rate on the attention weights."),
    ("drop_path_rate", "float", "Stochastic depth rate of the last block."),
    ("init_from", "string", "Fine-tune from this model: a .keras file (architecture from the "
     "file, adapted to --image_size and the dataset's classes: position embeddings "
     "interpolated, a zero head when the classes differ) or a .weights.h5 file of --variant. "
     "Flags not given then default to the paper's fine-tuning recipe "
     "(training.config.FINETUNE_DEFAULTS: SGD momentum 0.9, lr 0.01, no weight decay, cosine, "
     "100 warmup steps, clip 1, no MixUp, 10 epochs). Unset: random initialization."),
    ("init_position_embeddings", "enum", "With --init_from at another resolution: "
     "'interpolate' the position embeddings (the paper) or 'reinitialize' them (ablation)."),
    # Optimization.
    ("global_batch_size", "integer", "Examples per step, summed over all replicas."),
    ("epochs", "integer", "Passes over the training split; ignored when --train_steps > 0."),
    ("train_steps", "integer", "Optimizer steps of the run; 0: derived from --epochs."),
    ("optimizer", "enum", "'adamw', 'adam' or 'sgd' (momentum 0.9, the paper's fine-tuning)."),
    ("learning_rate", "float", "Peak learning rate, reached at the end of the warmup."),
    ("weight_decay", "float", "Decoupled weight decay (not applied to biases, norms, "
     "embeddings)."),
    ("warmup_steps", "integer", "Steps of linear warmup from 0."),
    ("schedule", "enum", "Decay after the warmup: 'cosine' or 'linear' to 0, or 'constant'."),
    ("grad_clip_norm", "float", "Clip gradients at this global norm (the paper's 1.0); 0: off."),
    ("label_smoothing", "float", "Label smoothing of the training loss."),
    # Augmentation.
    ("random_crop", "bool", "Inception-style random crop (area in [--min_crop_area, 1], aspect "
     "3/4..4/3), resized back to --image_size; off: resize only."),
    ("min_crop_area", "float", "Smallest fraction of the image area a random crop keeps."),
    ("flip", "bool", "Random horizontal flip (leave off for digits and text)."),
    ("randaugment", "bool", "keras-cv RandAugment, 2 operations per image."),
    ("randaugment_magnitude", "float", "RandAugment magnitude in [0, 1] (keras-cv's scale)."),
    ("mixup", "float", "MixUp Beta(alpha, alpha) parameter; 0: off."),
    ("cutmix", "float", "CutMix Beta(alpha, alpha) parameter; 0: off. With --mixup, each batch "
     "gets one of the two."),
    # Performance and distribution.
    ("mixed_precision", "enum", "'off', 'bfloat16' (CPU, TPU, recent GPUs) or 'float16' (GPUs, "
     "with dynamic loss scaling)."),
    ("jit_compile", "bool", "Compile the training and evaluation steps with XLA."),
    ("strategy", "enum", "tf.distribute strategy: 'default', 'one_device', 'mirrored' (all local "
     "GPUs, else all logical CPUs), 'multi_worker' (TF_CONFIG), 'tpu'."),
    ("tpu", "string", "For --strategy=tpu: TPU name, grpc:// address or 'local' (TPU VM); "
     "unset: $TPU_NAME."),
    # Bookkeeping.
    ("seed", "integer", "Seed of initialization, data order and augmentation."),
    ("checkpoint_every_steps", "integer", "Save a checkpoint every this many steps, and at each "
     "epoch end; 0: epoch ends only."),
    ("keep_checkpoints", "integer", "Checkpoints kept in WORKDIR/checkpoints."),
    ("log_every_steps", "integer", "Write TensorBoard scalars every this many steps."),
    ("eval_every_epochs", "integer", "Also evaluate every this many epochs; 0: at the end only."),
    ("export", "bool", "Write WORKDIR/saved_model, a SavedModel taking uint8 images."),
    ("progress", "bool", "Show a progress bar while training."),
    # Few-shot evaluation during training (training/fewshot.py).
    ("fewshot_dataset", "string", "TFDS dataset for few-shot linear evaluation during training, "
     "logged to TensorBoard (fewshot/DATASET_Nshot); unset: off."),
    ("fewshot_data_dir", "string", "TFDS data directory of --fewshot_dataset; unset: --data_dir."),
    ("fewshot_train_split", "string", "Split the few-shot examples are drawn from."),
    ("fewshot_every_steps", "integer", "Few-shot evaluation every this many steps and at the end; "
     "0: at the end only."),
    ("fewshot_shots", "string", "Comma-separated examples per class, e.g. '1,5,10,25'."),
    ("fewshot_seeds", "integer", "Random draws per shot count."),
)

_ENUMS = {
    "pooling": POOLINGS,
    "optimizer": optim.OPTIMIZERS,
    "schedule": optim.SCHEDULES,
    "mixed_precision": MIXED_PRECISION,
    "strategy": distribute.STRATEGIES,
    "init_position_embeddings": POSITION_EMBEDDING_INITS,
}

_DEFINE = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "bool": flags.DEFINE_bool,
}


def define_training_flags():
    """Defines `--workdir` and one flag per `Config` field (idempotent)."""
    if "workdir" in FLAGS:
        return
    flags.DEFINE_string(
        "workdir", None,
        "Directory of the run: checkpoints, TensorBoard logs, model.keras, metrics.json, "
        "saved_model. Re-running the same command resumes from its last checkpoint.",
    )
    flags.mark_flag_as_required("workdir")
    for name, kind, help_text in _TRAINING_FLAGS:
        default = getattr(_D, name)
        if kind == "enum":
            flags.DEFINE_enum(name, default, _ENUMS[name], help_text)
        else:
            _DEFINE[kind](name, default, help_text)


def config_from_flags():
    """Returns the `Config` the parsed training flags describe, validated."""
    values = {name: FLAGS[name].value for name, _, _ in _TRAINING_FLAGS}
    for name in ("data_dir", "eval_split", "init_from", "fewshot_data_dir"):
        # absl gives "" for `--data_dir=`: both mean "unset".
        values[name] = values[name] or None
    if values["init_from"]:
        # Fine-tuning: the recipe's defaults for every flag not on the command line.
        for name, value in FINETUNE_DEFAULTS.items():
            if not FLAGS[name].present:
                values[name] = value
    return Config(**values).validate()


def define_export_flags():
    """Defines the flags of `python -m training.export` (idempotent)."""
    if "output_dir" in FLAGS:
        return
    flags.DEFINE_string("model", None, "A .keras model, e.g. WORKDIR/model.keras.")
    flags.DEFINE_string("output_dir", None, "Directory to write the SavedModel into.")
    flags.mark_flags_as_required(["model", "output_dir"])


def _define_once(kind, name, default, help_text, **kwargs):
    # Binaries share flag names (--model, --dataset, ...); defining one twice in a process that
    # imports several binaries would raise DuplicateFlagError.
    if name in FLAGS:
        return
    if kind == "enum":
        flags.DEFINE_enum(name, default, kwargs["enum_values"], help_text)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


def define_inspect_flags():
    """Defines the flags of `python -m training.inspect` (idempotent)."""
    _define_once("string", "model", None, "A .keras model, e.g. WORKDIR/model.keras.")
    _define_once("string", "output_dir", None, "Directory to write the PNGs and analysis.json "
                 "into.")
    _define_once("list", "images", [], "Comma-separated PNG/JPEG files, directories of them or "
                 "glob patterns; resized to the model's input size.")
    _define_once("string", "dataset", None, "TFDS dataset to take images from instead of (or as "
                 "well as) --images.")
    _define_once("string", "data_dir", None, "TFDS data directory of --dataset.")
    _define_once("string", "split", "test", "Split of --dataset to take the first images of.")
    _define_once("integer", "num_images", 32, "Images taken from --dataset (the paper averages "
                 "attention distances over 128).")
    _define_once("integer", "rollout_images", 8, "Images shown in rollout.png (the first ones).")
    _define_once("integer", "batch_size", 32, "Images per forward pass.")
    _define_once("enum", "head_fusion", "mean", "How attention rollout fuses heads.",
                 enum_values=["mean", "max", "min"])
    _define_once("float", "discard_ratio", 0.0, "Fraction of the smallest fused attention weights "
                 "attention rollout drops, in [0, 1).")
    _define_once("integer", "num_components", 28, "Principal components of the patch embedding "
                 "filters to draw.")
    flags.mark_flags_as_required(["model", "output_dir"])


def define_fewshot_flags():
    """Defines the flags of `python -m training.fewshot` (idempotent)."""
    _define_once("string", "model", None, "A .keras model, e.g. WORKDIR/model.keras.")
    _define_once("string", "dataset", None, "TFDS image-classification dataset, e.g. digits or "
                 "cifar10_jpeg.")
    _define_once("string", "data_dir", None, "TFDS data directory; unset: TFDS's default.")
    _define_once("string", "train_split", "train", "Split the few-shot examples are drawn from; "
                 "all its features are computed, so bound it on big datasets "
                 "('train[:65000]').")
    _define_once("string", "eval_split", None, "Split accuracy is measured on; unset: 'test', "
                 "else 'validation'.")
    _define_once("list", "shots", ["1", "5", "10", "25"], "Comma-separated examples per class.")
    _define_once("integer", "seeds", 3, "Random draws per shot count.")
    _define_once("float", "l2_reg", 1024.0, "L2 regularization of the least-squares fit "
                 "(big_vision's 2^10).")
    _define_once("integer", "batch_size", 256, "Images per forward pass.")
    _define_once("string", "output", None, "Optional JSON file to write the results into.")
    flags.mark_flags_as_required(["model", "dataset"])


def define_convert_flags():
    """Defines the flags of `python -m training.convert` (idempotent).

    The model flags share their names with the training binary's; each binary runs in its own
    process, and here they default to None: the value the checkpoint's shapes imply.
    """
    if "npz" in FLAGS:
        return
    flags.DEFINE_string("npz", None, "Released checkpoint (.npz) to convert: the original ViT, "
                        "big_vision or AugReg layout.")
    flags.DEFINE_string("output", None, "The .keras model file to write.")
    flags.mark_flags_as_required(["npz", "output"])
    model_flags = (
        ("variant", flags.DEFINE_string, "keras_vit variant SIZE/PATCH; unset: the checkpoint's."),
        ("image_size", flags.DEFINE_integer, "Image side of the model (position embeddings are "
         "interpolated); unset: the checkpoint's."),
        ("num_classes", flags.DEFINE_integer, "Classes of the model's head: another count than "
         "the checkpoint's gets a zero-initialized head; unset: the checkpoint's."),
        ("representation_size", flags.DEFINE_integer, "Width of the pre-logits layer; 0: none "
         "(the checkpoint's is dropped); unset: the checkpoint's if --num_classes is too, "
         "else none (the paper's fine-tuning)."),
    )
    for name, define, help_text in model_flags:
        if name not in FLAGS:
            define(name, None, help_text)
    if "pooling" not in FLAGS:
        flags.DEFINE_enum("pooling", None, POOLINGS, "'token' or 'gap'; unset: the checkpoint's.")
