"""A released `.npz` checkpoint -> a `.keras` model, adapted to a new resolution and head.

    python -m training.convert --npz=ViT-B_16.npz --variant=B/16 --image_size=384 \\
        --num_classes=10 --output=model.keras

Reads the paper's released checkpoints (original ViT, big_vision and AugReg layouts) with
`keras_vit.checkpoints.load_npz`: position embeddings are interpolated to `--image_size`, and a
head of another class count (or pre-logits the model does not have) is replaced by a
zero-initialized one, as in the paper's fine-tuning. Unset model flags take the checkpoint's
values (pre-logits only when the class count stays the same), so `--npz=IN --output=OUT`
alone converts the file unchanged. Prints what it loaded, resized and dropped. The `.keras`
file appears complete or not at all.
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import checkpoints, finetune  # noqa: E402
from keras_vit.files import atomic_write  # noqa: E402
from training import flags as training_flags  # noqa: E402


def convert(npz, output, *, variant=None, image_size=None, num_classes=None, pooling=None,
            representation_size=None, print_fn=print):
    """Builds a ViT, fills it from `npz` and saves it as `output`.

    Args:
        npz: str. The checkpoint.
        output: str. The `.keras` file to write.
        variant, image_size, num_classes, pooling: `keras_vit.ViT` arguments; None takes the
            checkpoint's.
        representation_size: int or None. Width of the pre-logits layer, 0 for none; None takes
            the checkpoint's when the class count is the checkpoint's, else none (the paper's
            fine-tuning replaces the whole head by one linear layer).
        print_fn: callable receiving each line of the report.

    Returns:
        The `keras_vit.checkpoints.LoadSummary` of the load.

    Raises:
        ValueError: a bad checkpoint or output path, or a setting the checkpoint implies none
            of and that is unset.
    """
    output = os.fspath(output)
    if not output.endswith(".keras"):
        raise ValueError(f"--output {output!r} must end in '.keras'")
    info = checkpoints.inspect_npz(npz)
    print_fn(f"Checkpoint {npz}: {info['layout']} layout; looks like {info['description']}.")
    settings = dict(variant=variant, image_size=image_size, num_classes=num_classes,
                    pooling=pooling, representation_size=representation_size)
    for name, value in settings.items():
        if value is None:
            settings[name] = info.get(name)
            if settings[name] is None and name in ("variant", "image_size", "num_classes"):
                raise ValueError(
                    f"--{name} is unset and the checkpoint does not imply it "
                    f"({info['description']}): pass --{name}")
    if representation_size is None:
        settings["representation_size"] = finetune.default_pre_logits(
            source_classes=info["num_classes"], source_pre_logits=info["representation_size"],
            target_classes=settings["num_classes"])
    settings["representation_size"] = settings["representation_size"] or None
    model = keras_vit.ViT(settings.pop("variant"), **settings)
    summary = checkpoints.load_npz(model, npz)
    for line in summary.lines():
        print_fn(line)
    with atomic_write(output) as temporary:
        model.save(temporary)
    print_fn(f"Wrote {output}: {model.name}, {model.count_params():,} parameters, "
             f"input {tuple(model.input_shape[1:])}, output {tuple(model.output_shape[1:])}.")
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    # convert() prints the load summary; the library's log lines would repeat it.
    logging.getLogger("keras_vit.checkpoints").setLevel(logging.WARNING)
    try:
        convert(flags.npz, flags.output, variant=flags.variant, image_size=flags.image_size,
                num_classes=flags.num_classes, pooling=flags.pooling,
                representation_size=flags.representation_size)
    except ValueError as exc:
        raise SystemExit(f"training.convert: error: {exc}") from None


if __name__ == "__main__":
    training_flags.define_convert_flags()
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
