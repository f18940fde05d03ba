"""keras_vit.explain, moved into a package (split into modules in the next commit)."""

from keras_vit.explain.analyses import *  # noqa: F401,F403
from keras_vit.explain.analyses import __all__  # noqa: F401
