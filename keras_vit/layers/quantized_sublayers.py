"""How a layer with Dense sublayers records which of them `model.quantize(...)` quantized."""

import keras


class QuantizedSublayers:
    """Mixin of the layers that build Dense sublayers themselves (`TransformerBlock`, `MAPHead`).

    `model.quantize("int8")` quantizes the model's leaf layers: it changes the dtype policy of
    each Dense sublayer, which the parent layer's own policy does not say. So that a saved
    quantized model reloads with its int8 weights, the parent's `get_config` records its
    quantized sublayers' policies in its `dtype`, a `keras.dtype_policies.DTypePolicyMap` keyed
    by sublayer name (`_quantized_dtype`), and its `build` creates each sublayer with
    `_sublayer_policy(name)`. A class using it lists the sublayers (attribute and layer name
    alike) in `_QUANTIZABLE_SUBLAYERS`.
    """

    _QUANTIZABLE_SUBLAYERS = ()

    def _sublayer_policy(self, name):
        """The dtype policy sublayer `name` is built with."""
        # The map is keyed by the sublayer's name, not by its full path as Keras would look it
        # up ("encoder_block_0/qkv"): a saved layer stays loadable under another name or parent.
        policy = self.dtype_policy
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            return policy[name]
        return policy

    def _quantized_dtype(self):
        """The serialized `dtype` that records quantized sublayers, or None if there are none."""
        quantized = {
            name: getattr(self, name).dtype_policy
            for name in self._QUANTIZABLE_SUBLAYERS
            if self.built and getattr(self, name).quantization_mode is not None
        }
        if not quantized:
            return None
        default = self.dtype_policy
        if isinstance(default, keras.dtype_policies.DTypePolicyMap):
            default = default.default_policy
        return keras.dtype_policies.serialize(
            keras.dtype_policies.DTypePolicyMap(default_policy=default, policy_map=quantized)
        )

    def _config_with_quantized_dtype(self, config):
        """`config` (a `get_config` result) with `dtype` recording the quantized sublayers."""
        quantized = self._quantized_dtype()
        if quantized is not None:
            config["dtype"] = quantized  # an unquantized layer keeps its plain policy
        return config
