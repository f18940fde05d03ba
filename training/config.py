"""`Config`: every setting of a training run, as one validated dataclass.

`training/flags.py` builds it from the command line; tests and notebooks build it by hand
(`Config(variant="mu/2", train_steps=3)`) and call `training.train.train_and_evaluate` with it.
The defaults are the project's main job: a small ViT trained on the embedded `digits` dataset.
They were chosen by experiment on a 2-core CPU (test accuracy, median of seeds 0-2): mu/4 at
16x16 (64 tokens of 2x2 original pixels) with mean pooling, 300 epochs of AdamW at 3e-3 with a
cosine schedule, a mild random crop (>= 80% of the area) and MixUp 0.2 reach 98.3% in about
40 s. Without MixUp the result swings with the seed (96.7-98.3%); class-token pooling, a patch
of 2 (256 tokens), Ti/8, 500 epochs, RandAugment or more weight decay were no better or
slower. An SVM reaches about 98.9% on this split.
"""

import dataclasses
import json
import os

from keras_vit import hub, lora
from keras_vit.layers.pooling import POOLINGS  # noqa: F401  (the model's own list; flags use it)
from keras_vit.validation import check_choice, check_int, check_number
from training import distribute, optim

MIXED_PRECISION = ("off", "bfloat16", "float16")
POSITION_EMBEDDING_INITS = ("interpolate", "reinitialize")

# The paper's fine-tuning recipe (Section 4.1 and Appendix B.1.1): SGD with momentum 0.9, no
# weight decay, global-norm clipping at 1, cosine decay after a short linear warmup; the
# augmentation of big_vision's transfer configs (Inception crop, no MixUp). The learning rate is
# the middle of the paper's sweep {0.001, 0.003, 0.01, 0.03}. These replace the from-scratch
# defaults when fine-tuning (`Config.for_finetuning`, or `--init_from` without the flag).
FINETUNE_DEFAULTS = {
    "optimizer": "sgd",
    "learning_rate": 0.01,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "schedule": "cosine",
    "grad_clip_norm": 1.0,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "randaugment": False,
    "epochs": 10,
}


@dataclasses.dataclass
class Config:
    """Settings of one training run; each field is the flag of the same name.

    Data:
        dataset: str. TFDS name; `digits` ships with the project. Defaults to "digits".
        data_dir: str or None. TFDS data directory; None for TFDS's default.
        train_split, eval_split: str / str or None. TFDS splits; eval_split None picks "test",
            else "validation".
        shuffle_buffer: int. Examples in the training shuffle buffer.

    Model:
        variant: str. `keras_vit` "SIZE/PATCH".
        image_size: int. Images are resized to image_size x image_size.
        pooling: str. "token" or "gap".
        representation_size: int. Width of the pre-logits layer; 0 for none.
        dropout, attention_dropout, drop_path_rate: float. Regularization of the encoder.
        init_from: str or None. Fine-tune from this model instead of a random initialization:
            a `.keras` model (its architecture is used, adapted by `keras_vit.finetune.adapt` to
            image_size and the dataset's classes; variant, pooling, representation_size and
            the dropout fields are then ignored) or a `.weights.h5` file of the configured
            architecture, or a Hub checkpoint (`hf://ORG/NAME[@REVISION]`, a folder with
            `config.json` and safetensors), built as its config states and adapted as a
            `.keras` model is. See `FINETUNE_DEFAULTS` and `Config.for_finetuning`.
        init_position_embeddings: str. With init_from at another resolution: "interpolate" the
            pre-trained position embeddings (the paper's recipe) or "reinitialize" them.
        lora_rank: int. With init_from: fine-tune low-rank adapters of this rank on the blocks'
            projections and the head, everything else frozen (`keras_vit.finetune.enable_lora`);
            0 fine-tunes every weight (the paper's recipe).
        lora_targets: str. Comma-separated roles or groups the adapters go on ("qkv",
            "attention_output", "mlp_in", "mlp_out", "attention", "mlp", "all").
        lora_train_norms: bool. With lora_rank: also train the LayerNorms and the LayerScale
            gammas.
        remat: bool. Gradient checkpointing: each Transformer block recomputes its
            activations in the backward pass (`keras_vit.ViT(remat=True)`), also for a model
            from init_from. Less memory per step for about one more forward pass.

    Optimization:
        global_batch_size: int. Examples per optimizer step over all replicas.
        accumulation_steps: int. Gradient accumulation: each replica's share of the global
            batch is split into this many equal micro-batches whose gradients are summed
            before the one update (`training/steps.py`); memory is that of one micro-batch,
            the update that of the whole batch. 1: no accumulation.
        epochs: int. Passes over the training split; ignored when train_steps > 0.
        train_steps: int. Optimizer steps of the run; 0 derives them from epochs.
        optimizer: str. "adamw", "adam" or "sgd" (momentum 0.9).
        learning_rate: float. Peak learning rate.
        weight_decay: float. Decoupled weight decay.
        warmup_steps: int. Linear warmup steps.
        schedule: str. "cosine", "linear" or "constant".
        grad_clip_norm: float. Clip gradients at this global norm; 0 disables.
        label_smoothing: float. Label smoothing of the training loss.

    Augmentation (training only):
        random_crop: bool. Inception-style random crop covering [min_crop_area, 1] of the image.
        min_crop_area: float. Smallest fraction of the image area a random crop keeps.
        flip: bool. Random horizontal flip.
        randaugment: bool. keras-cv RandAugment, with randaugment_magnitude in [0, 1].
        mixup, cutmix: float. Beta(alpha, alpha) of MixUp / CutMix; 0 disables.

    Performance and distribution:
        mixed_precision: str. "off", "bfloat16" (CPU, TPU, recent GPUs) or "float16" (GPUs, with
            dynamic loss scaling).
        jit_compile: bool. Compile the training and evaluation steps with XLA.
        strategy: str. One of `training.distribute.STRATEGIES`.
        tpu: str. TPU name or address for strategy "tpu".

    Bookkeeping:
        seed: int. Seed of initialization, data order and augmentation.
        checkpoint_every_steps: int. Save a checkpoint every this many steps (and at each epoch
            end); 0 saves at epoch ends only.
        keep_checkpoints: int. Checkpoints kept in workdir/checkpoints.
        log_every_steps: int. TensorBoard scalars every this many steps.
        eval_every_epochs: int. Also evaluate every this many epochs; 0 evaluates at the end
            only.
        export: bool. Write workdir/saved_model with a raw-image serving signature.
        progress: bool. Show a progress bar.

    Few-shot evaluation (optional, logged to TensorBoard as fewshot/DATASET_Nshot; see
    `training/fewshot.py`):
        fewshot_dataset: str. TFDS dataset to evaluate few-shot linear accuracy on; "" is off.
        fewshot_data_dir: str or None. Its TFDS data directory; None uses data_dir.
        fewshot_train_split: str. The split few-shot examples are drawn from ("train[:10000]"
            bounds the features computed at each evaluation).
        fewshot_every_steps: int. Evaluate every this many steps, and at the end; 0: at the end.
        fewshot_shots: str. Comma-separated examples per class, e.g. "1,5,10,25".
        fewshot_seeds: int. Random draws per shot count.
    """

    dataset: str = "digits"
    data_dir: str = None
    train_split: str = "train"
    eval_split: str = None
    shuffle_buffer: int = 10_000

    variant: str = "mu/4"
    image_size: int = 16
    pooling: str = "gap"
    representation_size: int = 0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    init_from: str = None
    init_position_embeddings: str = "interpolate"
    lora_rank: int = 0
    lora_targets: str = "all"
    lora_train_norms: bool = False
    remat: bool = False

    global_batch_size: int = 64
    accumulation_steps: int = 1
    epochs: int = 300
    train_steps: int = 0
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    schedule: str = "cosine"
    grad_clip_norm: float = 1.0
    label_smoothing: float = 0.0

    random_crop: bool = True
    min_crop_area: float = 0.8
    flip: bool = False
    randaugment: bool = False
    randaugment_magnitude: float = 0.5
    mixup: float = 0.2
    cutmix: float = 0.0

    mixed_precision: str = "off"
    jit_compile: bool = False
    strategy: str = "default"
    tpu: str = ""

    seed: int = 0
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    eval_every_epochs: int = 0
    export: bool = True
    progress: bool = True

    fewshot_dataset: str = ""
    fewshot_data_dir: str = None
    fewshot_train_split: str = "train"
    fewshot_every_steps: int = 0
    fewshot_shots: str = "1,5,10,25"
    fewshot_seeds: int = 3

    def validate(self):
        """Checks every field on its own; raises ValueError naming the first bad one.

        What needs the dataset or the strategy (the batch against the replicas, the image size
        against the patch size) is checked where those are known, still before anything is
        written.
        """
        for name in ("image_size", "global_batch_size", "accumulation_steps", "shuffle_buffer",
                     "keep_checkpoints", "log_every_steps"):
            check_int(name, getattr(self, name), minimum=1)
        check_micro_batches(self.global_batch_size, self.accumulation_steps)
        for name in ("epochs", "train_steps", "warmup_steps", "checkpoint_every_steps", "lora_rank",
                     "eval_every_epochs", "representation_size", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        if self.epochs == 0 and self.train_steps == 0:
            raise ValueError("epochs and train_steps are both 0: set one of them to a positive "
                             "number")
        check_choice("optimizer", self.optimizer, optim.OPTIMIZERS)
        check_choice("schedule", self.schedule, optim.SCHEDULES)
        check_choice("strategy", self.strategy, distribute.STRATEGIES)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check_choice("pooling", self.pooling, POOLINGS)
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        for name in ("weight_decay", "grad_clip_norm", "mixup", "cutmix"):
            check_number(name, getattr(self, name), low=0.0)
        for name in ("label_smoothing", "dropout", "attention_dropout", "drop_path_rate"):
            check_number(name, getattr(self, name), low=0.0, high=1.0)
        check_number("min_crop_area", self.min_crop_area, low=0.0, high=1.0, low_open=True,
                     high_open=False)
        check_number("randaugment_magnitude", self.randaugment_magnitude, low=0.0, high=1.0,
                     high_open=False)
        check_choice("init_position_embeddings", self.init_position_embeddings,
                      POSITION_EMBEDDING_INITS)
        if self.init_from is not None and not hub.is_reference(self.init_from):
            if not isinstance(self.init_from, str) or not self.init_from.endswith(
                    (".keras", ".weights.h5")):
                raise ValueError(f"init_from must be a path to a '.keras' or '.weights.h5' "
                                 f"file, or a Hub checkpoint ('hf://ORG/NAME', a folder with "
                                 f"config.json and safetensors), received {self.init_from!r}")
            if not os.path.isfile(self.init_from):
                raise ValueError(f"init_from file {self.init_from!r} does not exist")
        if self.lora_rank:
            if self.init_from is None:
                raise ValueError(f"lora_rank={self.lora_rank} needs init_from: LoRA adapts a "
                                 f"pre-trained model, and a random one has nothing to adapt")
            lora.expand_targets(self.lora_targets)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a TFDS name, received {self.dataset!r}")
        check_int("fewshot_every_steps", self.fewshot_every_steps, minimum=0)
        check_int("fewshot_seeds", self.fewshot_seeds, minimum=1)
        parse_shots(self.fewshot_shots, name="fewshot_shots")
        return self

    @classmethod
    def for_finetuning(cls, init_from, **overrides):
        """A `Config` fine-tuning `init_from`: `FINETUNE_DEFAULTS`, then `overrides`.

        Example:

        >>> config = Config.for_finetuning("pretrained.keras", image_size=48)
        >>> config.optimizer, config.weight_decay, config.image_size
        ('sgd', 0.0, 48)
        """
        return cls(**{**FINETUNE_DEFAULTS, **overrides, "init_from": init_from})

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def check_micro_batches(global_batch_size, accumulation_steps, num_replicas=1):
    """Raises ValueError unless each replica's batch splits into `accumulation_steps` equal parts.

    `Config.validate` checks the global batch (`num_replicas` 1); the run checks each
    replica's share once the strategy is known, before anything is written.

    Example:

    >>> check_micro_batches(24, 8, num_replicas=2)
    Traceback (most recent call last):
    ...
    ValueError: the per-replica batch 12 (global_batch_size 24 over 2 replicas) is not divisible by accumulation_steps 8; use a global_batch_size that is a multiple of 16
    """
    per_replica = global_batch_size // num_replicas
    if per_replica % accumulation_steps == 0:
        return
    multiple = num_replicas * accumulation_steps
    if num_replicas == 1:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by accumulation_steps "
            f"{accumulation_steps}; use a multiple of {multiple}")
    raise ValueError(
        f"the per-replica batch {per_replica} (global_batch_size {global_batch_size} over "
        f"{num_replicas} replicas) is not divisible by accumulation_steps {accumulation_steps}; "
        f"use a global_batch_size that is a multiple of {multiple}")


def parse_shots(text, name="shots"):
    """"1,5,10,25" (or a list of such strings or ints) -> [1, 5, 10, 25]; ValueError otherwise."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        shots = [int(str(item).strip()) for item in items]
    except ValueError:
        shots = []
    if not shots or min(shots) < 1:
        raise ValueError(f"{name} must be comma-separated positive integers such as "
                         f"'1,5,10,25', received {text!r}")
    return shots
