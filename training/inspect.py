"""Deprecated: `training.inspect` is now `training.explain`; this path goes in the next release.

The old name shadowed the standard library's `inspect` module. `python -m training.inspect`
still runs the explain binary, with the same flags, after a DeprecationWarning on stderr; the
functions here are `training.explain`'s (`inspect_model` is `explain_model`).
"""

import warnings

from absl import app
from absl import flags as absl_flags

from training import flags as training_flags
from training.explain import *  # noqa: F401,F403
from training.explain import __all__ as _EXPLAIN_ALL
from training.explain import explain_model, main

inspect_model = explain_model

__all__ = _EXPLAIN_ALL + ["inspect_model"]

_MESSAGE = (
    "training.inspect is deprecated and will be removed in the next release: use "
    "training.explain instead (python -m training.explain, the same flags)"
)

if __name__ == "__main__":
    # Attributed to __main__, which Python's default warning filters show.
    warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=1)
    training_flags.define_explain_flags()
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
else:
    warnings.warn(_MESSAGE, DeprecationWarning, stacklevel=2)
