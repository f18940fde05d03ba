"""The random keep masks of one `TransformerBlock` call: dropout and stochastic depth.

Drawn before the block computes anything, so that a recomputation (`remat`) applies the same
masks and the gradients are those without remat. A reader of the block's equations can skip this
module: `drop` is inverted dropout with a drawn mask, `drop_path` the same per example
([Huang et al., 2016](https://arxiv.org/abs/1603.09382)), both the identity when the mask was
not drawn (inference, or a zero rate).
"""

import functools

import keras
from keras import ops


class BlockMasks:
    """The boolean keep masks of one block call, by name.

    Args:
        block: the `TransformerBlock` (its rates, widths and seed generator).
        batch: int or scalar tensor. B.
        length: int or scalar tensor. T, the tokens the keys and values come from.
        queries: int or scalar tensor. Tokens per example the block computes outputs for: 1 with
            `first_token_only`, else T.
        training: bool. No masks unless True.
    """

    def __init__(self, block, batch, length, queries, training):
        self.block, self.batch = block, batch
        self.masks = {}
        if not training:
            return
        # The stochastic-depth masks come first, in the order the branches use them.
        if block.drop_path_rate > 0:
            for name in ("path_attention", "path_mlp"):
                self.masks[name] = self._keep((batch, 1, 1), block.drop_path_rate)
        if block.dropout > 0:
            tokens = batch * queries
            for name, width in (
                ("attention_output", block.hidden_dim),
                ("mlp_hidden", block.mlp_dim),
                ("mlp_output", block.hidden_dim),
            ):
                self.masks[name] = self._keep((tokens, width), block.dropout)
        if block.attention_dropout > 0:
            self.masks["attention"] = self._keep(
                (batch, block.num_heads, queries, length), block.attention_dropout
            )

    def _keep(self, shape, rate):
        noise = keras.random.uniform(shape, seed=self.block.seed_generator)
        return noise >= rate

    def drop(self, x, name, rate=None):
        """Inverted dropout of `x` with mask `name`: kept values scaled by 1 / (1 - rate)."""
        if name not in self.masks:
            return x
        rate = self.block.dropout if rate is None else rate
        scale = ops.cast(1.0 / (1.0 - rate), x.dtype)
        return x * (ops.cast(self.masks[name], x.dtype) * scale)

    def drop_path(self, branch, name):
        """Stochastic depth of a residual branch (B * Q, D): one draw per example."""
        if name not in self.masks:
            return branch
        width = self.block.hidden_dim
        branch = ops.reshape(branch, (self.batch, -1, width))
        branch = self.drop(branch, name, self.block.drop_path_rate)
        return ops.reshape(branch, (-1, width))

    def attention_dropout(self):
        """The dropout of the attention probabilities, or None (fused kernels allowed)."""
        if "attention" not in self.masks:
            return None
        return functools.partial(self.drop, name="attention", rate=self.block.attention_dropout)
