"""Every command-line flag of the binaries, defined in this one module.

Each binary's flags are a table here: `python -m training.train` calls `define_training_flags()`,
`training.export` `define_export_flags()`, `training.explain` `define_explain_flags()`,
`training.fewshot` `define_fewshot_flags()`, `training.convert` `define_convert_flags()`,
`training.predict` `define_predict_flags()`, each before `app.run`; library code never reads
flags. Training flags mirror the fields of `training.config.Config` one to one, and take their
defaults from it, so
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
     "interpolated, a zero head when the classes differ), a Hugging Face Hub checkpoint "
     "(hf://ORG/NAME[@REVISION], or a folder with config.json and safetensors; architecture "
     "from its config, adapted the same way) or a .weights.h5 file of --variant. "
     "Flags not given then default to the paper's fine-tuning recipe "
     "(training.config.FINETUNE_DEFAULTS: SGD momentum 0.9, lr 0.01, no weight decay, cosine, "
     "100 warmup steps, clip 1, no MixUp, 10 epochs). Unset: random initialization."),
    ("init_position_embeddings", "enum", "With --init_from at another resolution: "
     "'interpolate' the position embeddings (the paper) or 'reinitialize' them (ablation)."),
    ("lora_rank", "integer", "With --init_from: LoRA fine-tuning, low-rank adapters of this "
     "rank on the blocks' projections, the new head trained, every other weight frozen "
     "(keras_vit.finetune.enable_lora; WORKDIR/lora_weights.npz holds what was trained, "
     "model.keras the merged model). 0: fine-tune every weight."),
    ("lora_targets", "string", "With --lora_rank: comma-separated projections that get "
     "adapters: qkv, attention_output, mlp_in, mlp_out, or the groups attention, mlp, all "
     "(in every block, and in a MAP pooling head)."),
    ("lora_train_norms", "bool", "With --lora_rank: also train the LayerNorms and the "
     "LayerScale gammas."),
    ("remat", "bool", "Gradient checkpointing: recompute each Transformer block's activations "
     "in the backward pass (also for --init_from): much less memory per step for about one "
     "more forward pass (see README, Resolution and memory)."),
    # Optimization.
    ("global_batch_size", "integer", "Examples per optimizer step, summed over all replicas."),
    ("accumulation_steps", "integer", "Gradient accumulation: split each replica's share of "
     "the global batch into this many micro-batches and sum their gradients into one update "
     "(clipped after the sum): the update of --global_batch_size with the memory of one "
     "micro-batch. 1: off."),
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

# The other binaries' flags: (name, kind, default, help[, enum values]).
_MODEL = ("model", "string", None, "A .keras model, e.g. WORKDIR/model.keras.")


def _export_flags():
    """The export binary's flags, its formats, quantizations and opset from `export_formats`."""
    # Imported when the export binary defines its flags, not with this module: export_formats
    # imports the input pipeline (TFDS, keras-cv), which the other binaries' flags do not need.
    from training.export_formats import FORMATS, ONNX_OPSET, QUANTIZATIONS

    return (
        _MODEL,
        ("output", "string", None, "Where to write: the SavedModel directory, the .tflite file "
         "(--format=litert) or the .onnx file (--format=onnx)."),
        ("format", "enum", "saved_model", "'saved_model' (any image size, resized inside), "
         "'litert' (.tflite, builtin ops, uint8 images of the model's size) or 'onnx' (.onnx, "
         "dynamic batch, uint8 images of the model's size).", list(FORMATS)),
        ("quantize", "enum", "none", "LiteRT only: 'float16' weights, 'dynamic_range' (int8 "
         "weights), 'int8' (full integer, calibrated on --dataset's training images) or 'none'.",
         list(QUANTIZATIONS)),
        ("image_size", "integer", 0, "Input size of a model whose size is not fixed; 0: the "
         "model's own."),
        ("dataset", "string", None, "With --quantize=int8: the TFDS dataset whose training "
         "images calibrate the int8 ranges (the model's training data)."),
        ("data_dir", "string", None, "TFDS data directory of --dataset; unset: TFDS's default."),
        ("calibration_split", "string", "train", "Split of --dataset the calibration images are "
         "drawn from."),
        ("calibration_images", "integer", 200, "Images drawn (seed 0) to calibrate int8."),
        ("opset", "integer", ONNX_OPSET, "ONNX opset of --format=onnx."),
    )


_EXPLAIN_FLAGS = (
    _MODEL,
    ("output_dir", "string", None, "Directory to write the PNGs and analysis.json into."),
    ("images", "list", [], "Comma-separated PNG/JPEG files, directories of them or glob "
     "patterns; resized to the model's input size."),
    ("dataset", "string", None, "TFDS dataset to take images from instead of (or as well as) "
     "--images."),
    ("data_dir", "string", None, "TFDS data directory of --dataset."),
    ("split", "string", "test", "Split of --dataset to take the first images of."),
    ("num_images", "integer", 32, "Images taken from --dataset (the paper averages attention "
     "distances over 128)."),
    ("rollout_images", "integer", 8, "Images shown in rollout.png (the first ones)."),
    ("batch_size", "integer", 32, "Images per forward pass."),
    ("head_fusion", "enum", "mean", "How attention rollout fuses heads.", ["mean", "max", "min"]),
    ("discard_ratio", "float", 0.0, "Fraction of the smallest fused attention weights attention "
     "rollout drops, in [0, 1)."),
    ("num_components", "integer", 28, "Principal components of the patch embedding filters to "
     "draw."),
)

_FEWSHOT_FLAGS = (
    _MODEL,
    ("dataset", "string", None, "TFDS image-classification dataset, e.g. digits or "
     "cifar10_jpeg."),
    ("data_dir", "string", None, "TFDS data directory; unset: TFDS's default."),
    ("train_split", "string", "train", "Split the few-shot examples are drawn from; all its "
     "features are computed, so bound it on big datasets ('train[:65000]')."),
    ("eval_split", "string", None, "Split accuracy is measured on; unset: 'test', else "
     "'validation'."),
    ("shots", "list", ["1", "5", "10", "25"], "Comma-separated examples per class."),
    ("seeds", "integer", 3, "Random draws per shot count."),
    ("l2_reg", "float", 1024.0, "L2 regularization of the least-squares fit (big_vision's 2^10)."),
    ("batch_size", "integer", 256, "Images per forward pass."),
    ("output", "string", None, "Optional JSON file to write the results into."),
)

# The model flags share their names with the training binary's; here they default to None: the
# value the checkpoint's shapes imply.
_CONVERT_FLAGS = (
    ("npz", "string", None, "Released checkpoint (.npz) to convert: the original ViT, big_vision "
     "or AugReg layout."),
    ("output", "string", None, "The .keras model file to write."),
    ("variant", "string", None, "keras_vit variant SIZE/PATCH; unset: the checkpoint's."),
    ("image_size", "integer", None, "Image side of the model (position embeddings are "
     "interpolated); unset: the checkpoint's."),
    ("num_classes", "integer", None, "Classes of the model's head: another count than the "
     "checkpoint's gets a zero-initialized head; unset: the checkpoint's."),
    ("representation_size", "integer", None, "Width of the pre-logits layer; 0: none (the "
     "checkpoint's is dropped); unset: the checkpoint's if --num_classes is too, else none (the "
     "paper's fine-tuning)."),
    ("pooling", "enum", None, "'token' or 'gap'; unset: the checkpoint's.", POOLINGS),
)

_PREDICT_FLAGS = (
    ("weights", "string", None, "A keras_vit preset name (keras_vit.presets), a .keras model, "
     "a released .npz checkpoint by path or http(s)/gs URL, or a Hugging Face Hub checkpoint "
     "(hf://ORG/NAME[@REVISION], or a folder with config.json and safetensors)."),
    ("top", "integer", 5, "Classes printed per image."),
    ("labels", "enum", "auto", "Class names: 'auto' (the preset's, else by class count: 1000 "
     "imagenet2012, 21843 imagenet21k), a label set, or 'none' (indices).",
     ["auto", "imagenet2012", "imagenet21k", "none"]),
    ("rollout_dir", "string", None, "Directory to write each image's attention-rollout overlay "
     "into (IMAGE.rollout.png); unset: none."),
    ("max_pixels", "integer", 100_000_000, "Images of more pixels are reported as errors "
     "without being decoded (decoding holds about 17 bytes per pixel: 2.5 GB at the default); "
     "0: no limit."),
)

_DEFINE = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "bool": flags.DEFINE_bool,
    "list": flags.DEFINE_list,
}


def define_training_flags():
    """Defines `--workdir` and one flag per `Config` field."""
    _define(
        (("workdir", "string", None, "Directory of the run: checkpoints, TensorBoard logs, "
          "model.keras, metrics.json, saved_model. Re-running the same command resumes from its "
          "last checkpoint."),)
        + tuple(
            (name, kind, getattr(_D, name), help_text)
            + ((_ENUMS[name],) if kind == "enum" else ())
            for name, kind, help_text in _TRAINING_FLAGS
        ),
        required=["workdir"],
    )


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
    """Defines the flags of `python -m training.export`."""
    _define(_export_flags(), required=["model", "output"])


def define_explain_flags():
    """Defines the flags of `python -m training.explain`."""
    _define(_EXPLAIN_FLAGS, required=["model", "output_dir"])



def define_fewshot_flags():
    """Defines the flags of `python -m training.fewshot`."""
    _define(_FEWSHOT_FLAGS, required=["model", "dataset"])


def define_convert_flags():
    """Defines the flags of `python -m training.convert`."""
    _define(_CONVERT_FLAGS, required=["npz", "output"])


def define_predict_flags():
    """Defines the flags of `python -m training.predict`."""
    _define(_PREDICT_FLAGS, required=["weights"])


def _define(table, *, required):
    """Defines each flag of `table` that is not defined yet; marks the `required` ones.

    Calling a `define_*_flags` function twice is harmless, and so is importing several binaries
    into one process (tests do): binaries share flag names (--model, --dataset, ...), and a
    name's first definition is kept. A binary's own process defines only its own flags.
    """
    for name, kind, default, help_text, *enum_values in table:
        if name in FLAGS:
            continue
        if kind == "enum":
            flags.DEFINE_enum(name, default, enum_values[0], help_text)
        else:
            _DEFINE[kind](name, default, help_text)
        if name in required:
            flags.mark_flag_as_required(name)
