"""The binaries' loader of a saved model: `load_model(path)` for every `--model=FILE.keras`.

`training.export`, `training.explain` and `training.fewshot` take a model this project saved
(`WORKDIR/model.keras`, `python -m training.convert`'s output) and load it here, so that each
refuses a bad path with the same error.
"""

import os
import zipfile

import keras

import keras_vit  # noqa: F401  (registers the keras_vit layers that a .keras file names)


def load_model(path):
    """Loads a `.keras` model of this project, uncompiled.

    Args:
        path: str or path-like. A `.keras` file.

    Returns:
        `keras.Model`.

    Raises:
        ValueError: the path does not end in `.keras`, no such file exists, or the file is
            not a complete `.keras` archive.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"model {path!r} is not a .keras file")
    if not os.path.isfile(path):
        raise ValueError(f"model file {path!r} does not exist")
    # A .keras file is a zip archive; Keras reports a truncated or foreign file as "File not
    # found" or a raw KeyError, naming nothing.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path!r} is not a .keras archive: it is not a zip file "
                         "(truncated, or another format)")
    try:
        return keras.saving.load_model(path, compile=False)
    except (KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"model file {path!r} is damaged: {type(exc).__name__}: {exc}") from None
