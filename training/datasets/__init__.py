"""TFDS builders that ship with the project.

Importing this package registers them with TFDS, so that `tfds.builder(name, data_dir=...)` and
`tfds.load(name, ...)` find them like any TFDS dataset. They need no network: the training
binary prepares them on first use.
"""

from training.datasets.digits import Digits

# Datasets whose builder ships with this project and prepares without a download; the input
# pipeline may call `download_and_prepare` on these and never on anything else.
EMBEDDED_DATASETS = ("digits",)
