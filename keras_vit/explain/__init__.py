"""Seeing inside a ViT: intermediate tokens, attention maps and the paper's analyses.

[The ViT paper](https://arxiv.org/abs/2010.11929), Section 4.5 and Appendix D.7,
looks inside trained models in three ways, each a function here, with a
plotting helper that writes the paper's figure as a PNG:

- `attention_rollout` (Figure 6, Abnar & Zuidema 2020): which parts of the
  image the representation attends to; `plot_attention_rollout`.
- `patch_embedding_components` (Figure 7, left): the principal components of
  the patch-embedding filters; `plot_patch_embedding_filters`.
- `position_embedding_similarity` (Figure 7, centre): the cosine similarity of
  each position embedding with all others, on the patch grid;
  `plot_position_embedding_similarity`.
- `mean_attention_distance` (Figure 7, right): how far each head looks, against
  depth; `plot_mean_attention_distance`.

All of them rest on `intermediate_outputs`, which runs a model's own layers
(no second copy of the model code or of its weights) and asks every
`TransformerBlock` for its attention weights. Only that call computes them: a
normal `model(images)` keeps the fused attention kernels.

Functions take images as the model takes them (float, channels last, scaled
to [-1, 1], the model's input size) and return NumPy arrays. matplotlib is
needed by the `plot_*` functions only, and imported there.

One job per module, each name re-exported here (`keras_vit.explain.X`):

- `probe`: `intermediate_outputs`, `transformer_blocks`, `token_layout`: what
  the model computes inside.
- `analyses`: the paper's analyses above, as NumPy arrays.
- `plots`: the `plot_*` functions, each writing its PNG atomically
  (`keras_vit.files.atomic_write`).
"""

from keras_vit.explain import analyses, plots, probe
from keras_vit.explain.analyses import (
    HEAD_FUSIONS,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    patch_embedding_components,
    position_embedding_similarity,
    rollout_from_weights,
    similarity_by_relation,
)
from keras_vit.explain.plots import (
    plot_attention_rollout,
    plot_mean_attention_distance,
    plot_patch_embedding_filters,
    plot_position_embedding_similarity,
)
from keras_vit.explain.probe import intermediate_outputs, token_layout, transformer_blocks

__all__ = [
    "HEAD_FUSIONS",
    "attention_rollout",
    "intermediate_outputs",
    "mean_attention_distance",
    "patch_distances",
    "patch_embedding_components",
    "plot_attention_rollout",
    "plot_mean_attention_distance",
    "plot_patch_embedding_filters",
    "plot_position_embedding_similarity",
    "position_embedding_similarity",
    "rollout_from_weights",
    "similarity_by_relation",
    "token_layout",
    "transformer_blocks",
]
