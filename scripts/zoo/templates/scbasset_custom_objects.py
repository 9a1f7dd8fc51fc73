"""scBasset's custom layers (Yuan & Kelley 2022), as the zoo's custom_objects.py declares them: a GELU layer,
stochastic reverse-complement / shift augmentations that are identities at inference (the reverse-complement
layer also returns a "was reversed" flag, a second output) and a SwitchReverse that undoes the reversal.
Written for the kipoi-dfim zoo harness from the zoo entry's facts."""
import tensorflow as tf


class GELU(tf.keras.layers.Layer):
    def call(self, x):
        return tf.keras.activations.sigmoid(tf.constant(1.702) * x) * x


class StochasticReverseComplement(tf.keras.layers.Layer):
    def call(self, seq_1hot, training=None):
        if training:
            rc = tf.reverse(tf.gather(seq_1hot, [3, 2, 1, 0], axis=-1), axis=[1])
            flag = tf.random.uniform(shape=[]) > 0.5
            return tf.cond(flag, lambda: rc, lambda: seq_1hot), flag
        return seq_1hot, tf.constant(False)


class StochasticShift(tf.keras.layers.Layer):
    def __init__(self, shift_max=0, pad="uniform", **kwargs):
        super().__init__(**kwargs)
        self.shift_max = shift_max
        self.pad = pad

    def call(self, seq_1hot, training=None):
        return seq_1hot  # shifts only while training

    def get_config(self):
        return {**super().get_config(), "shift_max": self.shift_max, "pad": self.pad}


class SwitchReverse(tf.keras.layers.Layer):
    def call(self, x_reverse):
        x, reverse = x_reverse
        axes = [1] if len(x.shape) == 3 else [1, 2]
        return tf.keras.backend.switch(reverse, tf.reverse(x, axis=axes), x)


OBJECTS = {"GELU": GELU, "StochasticReverseComplement": StochasticReverseComplement,
           "StochasticShift": StochasticShift, "SwitchReverse": SwitchReverse}
