"""Deprecated: `keras_vit.inspect` is now `keras_vit.explain`; this path goes in the next release.

The old name shadowed the standard library's `inspect` module. Everything public in
`keras_vit.explain` is re-exported here unchanged.
"""

import warnings

from keras_vit.explain import *  # noqa: F401,F403
from keras_vit.explain import __all__  # noqa: F401

warnings.warn(
    "keras_vit.inspect is deprecated and will be removed in the next release: import "
    "keras_vit.explain instead (the same functions)",
    DeprecationWarning,
    stacklevel=2,
)
