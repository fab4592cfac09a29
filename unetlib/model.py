"""The UNet: small named blocks (two convs, down, up) composed by one short builder.

Every layer has a readable name (``enc1_conv1``, ``down2``, ``bridge_conv2``, ``up1``,
``dec1_conv2``, ``probabilities``) so the architecture notebook can show and probe them.
"""

from __future__ import annotations

import unetlib.backend  # noqa: F401  (TensorFlow loaded once, quietly)

# isort: split

import keras
import tensorflow as tf
from keras import layers

from unetlib.config import CHOICES, Config
from unetlib.labels import NUM_CLASSES, SLICE_SHAPE

__all__ = [
    "FusedBatchNormalization",
    "conv_block",
    "down",
    "up",
    "build_unet",
    "build_from_config",
    "receptive_field",
    "forward_flops_per_slice",
]


@keras.saving.register_keras_serializable(package="unetlib")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused batch-norm kernel.

    Keras 3 builds batch norm from about ten separate operations (mean, squared difference,
    subtract, multiply, ...), each a pass over the activation and its gradient; for a thin
    UNet on a CPU those passes cost about a quarter of a training step. TensorFlow's
    ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU) does the same maths in one kernel
    each way. Weights, moving statistics, momentum and epsilon are those of the parent
    class; any case the fused kernel does not cover (a mask, renormalisation, another
    axis) falls back to it.
    """

    def call(self, inputs, training=None, mask=None):
        """Normalise ``inputs`` with the batch's statistics (training) or the moving ones.

        Args:
            inputs: activations, normally ``(batch, height, width, channels)``.
            training: True in training: use and update the batch statistics.
            mask: a Keras mask; if given, the parent class's computation is used.

        Returns:
            The normalised activations in the layer's compute dtype.
        """
        rank = len(inputs.shape)
        if mask is not None or self.renorm or rank != 4 or self.axis not in (-1, rank - 1):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # statistics in float32, as the parent class does
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels])
        beta = self.beta if self.center else tf.zeros([channels])
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, is_training=True)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


def conv_block(x, filters: int, name: str, normalisation: str = "batch", dropout: float = 0.0):
    """Two 3×3 convolutions, each followed by (optional) batch norm and ReLU.

    Args:
        x: the input tensor ``(batch, height, width, channels)`` (a Keras symbolic tensor).
        filters: output channels of each convolution.
        name: prefix of the layer names (``NAME_conv1``, ``NAME_norm1``, ``NAME_relu1``, ...).
        normalisation: ``"batch"`` or ``"none"``.
        dropout: dropout rate after the block; 0 adds no dropout layer.

    Returns:
        A tensor of the same height and width with ``filters`` channels.
    """
    for index in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=normalisation == "none",
            kernel_initializer="he_normal",
            name=f"{name}_conv{index}",
        )(x)
        if normalisation == "batch":
            x = FusedBatchNormalization(name=f"{name}_norm{index}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index}")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def down(x, name: str):
    """Halve the resolution with 2×2 max pooling (doubles the receptive field).

    Args:
        x: the input tensor ``(batch, height, width, channels)``.
        name: the pooling layer's name.
    """
    return layers.MaxPooling2D(2, name=name)(x)


def up(x, skip, filters: int, name: str, upsampling: str = "transpose"):
    """Double the resolution and concatenate the encoder's skip connection of that size.

    Args:
        x: the decoder's tensor ``(batch, height, width, channels)``.
        skip: the encoder's tensor of twice that height and width.
        filters: channels of ``x`` after upsampling.
        name: the upsampling layer's name (the concatenation is ``NAME_skip``).
        upsampling: ``"transpose"`` (learned 2×2 transposed conv) or anything else for bilinear
            resize + 1×1 conv.

    Returns:
        A tensor of ``skip``'s height and width with ``filters`` plus ``skip``'s channels.
    """
    if upsampling == "transpose":
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=name)(x)
    else:
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
        x = layers.Conv2D(filters, 1, name=name)(x)
    return layers.Concatenate(name=f"{name}_skip")([x, skip])


def build_unet(
    features: tuple[int, ...] = Config.features,
    *,
    input_shape: tuple[int, int, int] = (*SLICE_SHAPE, 1),
    num_classes: int = NUM_CLASSES,
    normalisation: str = Config.normalisation,
    dropout: float = Config.dropout,
    upsampling: str = Config.upsampling,
    name: str = "unet",
) -> keras.Model:
    """Build a 2D UNet returning per-pixel class probabilities (softmax, float32).

    Args:
        features: filters per encoder level, deepest last; the final entry is the bridge.
            The default, ``quick``'s ``(8, 16, 32, 64, 128)``, gives 4 down-sampling steps; the
            input's height and width must be divisible by ``2 ** (len(features) - 1)``.
            Every default here is :class:`~unetlib.config.Config`'s.
        input_shape: ``(height, width, channels)`` of one slice.
        num_classes: number of output classes (6 for HipMRI).
        normalisation: ``"batch"`` or ``"none"`` (the original recipe had none).
        dropout: dropout rate after each conv block; 0 disables it.
        upsampling: ``"transpose"`` (learned) or ``"bilinear"`` (fixed resize + 1×1 conv).
        name: the model's name.

    Raises:
        ValueError: an unknown ``normalisation`` or ``upsampling``, or an input height or width
            not divisible by ``2 ** (len(features) - 1)``.
    """
    for option, value in (("normalisation", normalisation), ("upsampling", upsampling)):
        if value not in CHOICES[option]:
            raise ValueError(f"{option}={value!r}; expected one of {', '.join(CHOICES[option])}")
    depth = len(features) - 1
    factor = 2**depth
    if input_shape[0] % factor or input_shape[1] % factor:
        raise ValueError(f"input {input_shape[:2]} is not divisible by 2**{depth}; use fewer levels")
    inputs = keras.Input(input_shape, name="image")
    x, skips = inputs, []
    for level, filters in enumerate(features[:-1], start=1):
        x = conv_block(x, filters, f"enc{level}", normalisation, dropout)
        skips.append(x)
        x = down(x, f"down{level}")
    x = conv_block(x, features[-1], "bridge", normalisation, dropout)
    for level in range(depth, 0, -1):
        x = up(x, skips[level - 1], features[level - 1], f"up{level}", upsampling)
        x = conv_block(x, features[level - 1], f"dec{level}", normalisation, dropout)
    logits = layers.Conv2D(num_classes, 1, name="logits")(x)
    # Softmax in float32 even under mixed precision, so probabilities and losses stay exact.
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=name)


def build_from_config(config) -> keras.Model:
    """The UNet described by a :class:`unetlib.config.Config`.

    Args:
        config: its ``features``, ``normalisation``, ``dropout`` and ``upsampling`` are used; the
            input is one 256×128 slice and the output has 6 classes.
    """
    return build_unet(
        config.features, normalisation=config.normalisation, dropout=config.dropout, upsampling=config.upsampling
    )


def receptive_field(depth: int, convs_per_block: int = 2) -> list[int]:
    """Receptive field (pixels) after each encoder level and the bridge of a UNet.

    Each 3×3 conv adds 2 × (current stride) pixels; each 2×2 pooling doubles the stride.

    Args:
        depth: number of down-sampling steps (``len(features) - 1``).
        convs_per_block: 3×3 convolutions per block.

    Returns:
        ``depth + 1`` widths in pixels: one per encoder level, the bridge's last.
    """
    field, stride, fields = 1, 1, []
    for level in range(depth + 1):
        field += convs_per_block * 2 * stride
        fields.append(field)
        if level < depth:
            field += stride  # the 2×2 pooling window
            stride *= 2
    return fields


def forward_flops_per_slice(model: keras.Model) -> int:
    """Floating-point operations of one forward pass for one slice, counted from the layers.

    Convolutions dominate a UNet, so only they are counted: a multiply and an add per weight
    per output position (``2·k·k·C_in·C_out·H_out·W_out``; for a transposed convolution the
    kernel visits each *input* position). Training costs about three forward passes
    (forward, gradient for inputs, gradient for weights).

    Args:
        model: a built Keras model; only its ``Conv2D`` and ``Conv2DTranspose`` layers are counted.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            if isinstance(layer, layers.Conv2DTranspose):
                positions = layer.input.shape[1] * layer.input.shape[2]
            else:
                positions = layer.output.shape[1] * layer.output.shape[2]
            total += 2 * kernel_h * kernel_w * channels_in * channels_out * positions
    return int(total)
