"""The small models whose kernels between them use every kernel template (the records of kcomp.kernels.registry).

tests/test_gpu_templates.py runs each on a GPU against the reference; test_gpu_cases.py checks
on any machine that together they still reach every template, so a new template cannot miss
its GPU check.
"""

import numpy as np

from kcomp.layers import (
    GRU, LSTM, Add, Conv2D, Conv2DTranspose, Dense, DepthwiseConv2D, Dropout, Embedding, GlobalAveragePooling2D, Input,
    LayerNormalization, MaxPooling2D, RandomContrast, RandomFlip, RandomRotation, RandomZoom, Rescaling, Resizing,
    SeparableConv2D, SimpleRNN, Softmax,
)
from kcomp.layers import Cropping2D, ReLU, UpSampling2D, ZeroPadding2D
from kcomp.models import Model, Sequential

BATCH = 37  # ragged: no block size divides it


def mlp():
    """matmul with its epilogues, dropout (pointwise), bias gradients (reduce), softmax_xent, optimizer."""
    return Sequential([Input(shape=(20,)), Dense(16, activation="relu"), Dropout(0.25, seed=3),
                       Dense(4, activation="softmax")])


def rows():
    """layer_norm, and the softmax template (a softmax over a row no matmul epilogue owns: after an add)."""
    x = Input(shape=(12,))
    h = LayerNormalization()(Dense(12, activation="tanh")(x))
    y = Dense(5, activation="softmax")(Softmax()(Add()([h, x])))
    return Model(x, y)


def cnn():
    """conv2d (with a pool in its epilogue, and a rescale in its prologue), pool2d, both conv gradients,
    pool2d_grad; resize (bilinear, 11x10 to 9x9) before them."""
    return Sequential([Input(shape=(11, 10, 2)), Resizing(9, 9), Rescaling(0.5, offset=0.25),
                       Conv2D(4, 3, activation="relu"), MaxPooling2D(),
                       Conv2D(6, 3, padding="same", activation="relu"), MaxPooling2D(pool_size=2, strides=1),
                       GlobalAveragePooling2D(), Dense(4, activation="softmax")])


def image_moves():
    """pad_slice (ZeroPadding2D's uneven pads; a crop with the ReLU after it; in training the crop's
    gradient, a pad of the ReLU's masked gradient), resize (UpSampling2D bilinear) and, in training,
    resize_grad."""
    return Sequential([Input(shape=(7, 6, 2)), ZeroPadding2D(((1, 2), (0, 1))), Conv2D(3, 3, activation="relu"),
                       UpSampling2D(2, interpolation="bilinear"), Cropping2D(((1, 0), (2, 1))), ReLU(),
                       Conv2D(4, 3), GlobalAveragePooling2D(), Dense(4, activation="softmax")])


def separable_cnn():
    """conv2d_depthwise (bias and activation in its epilogue) and both depthwise gradients, the 1x1
    pointwise conv as a matmul, and Conv2DTranspose: conv2d_grad_input with its bias and activation;
    in training the images flipped and rotated first (affine_transform, parameters drawn in the step)."""
    return Sequential([Input(shape=(9, 9, 3)), RandomFlip(seed=5), RandomRotation(0.1, seed=6),
                       SeparableConv2D(4, 3, padding="same", depth_multiplier=2, activation="relu"),
                       DepthwiseConv2D(3, strides=2, activation="relu"),
                       Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1, activation="relu"),
                       GlobalAveragePooling2D(), Dense(4, activation="softmax")])


def augmented_features():
    """affine_transform_grad: in training a zoom after a trainable conv (its input needs a gradient),
    and RandomContrast's per-image arithmetic as one pointwise kernel (per-image operands)."""
    return Sequential([Input(shape=(4, 3, 2)), Conv2D(3, 3, padding="same", activation="relu"),
                       RandomZoom(0.2, seed=7), RandomContrast(0.3, value_range=(0, 50), seed=8),
                       GlobalAveragePooling2D(), Dense(4, activation="softmax")])


def sequences():
    """lstm_scan, gru_scan, simple_rnn_scan and their gradients (stacked: each layer reads every h_t
    of the one below; the GRU with and without reset_after, SimpleRNN with relu and tanh), the
    projections as matmuls."""
    return Sequential([Input(shape=(7, 5)), LSTM(6, return_sequences=True), GRU(6, return_sequences=True),
                       SimpleRNN(6, activation="relu", return_sequences=True),
                       GRU(6, reset_after=False, return_sequences=True), SimpleRNN(6), Dense(4, activation="softmax")])


def wide_sequences():
    """lstm_scan_tiled and lstm_scan_grad_tiled: an LSTM above the on-chip limit (64 units), its
    70 units in several chunks."""
    return Sequential([Input(shape=(7, 5)), LSTM(70), Dense(4, activation="softmax")])


VOCAB = 23  # the embeddings case's ids: BATCH x 7 of them, so most rows sum several


def wide_gru():
    """gru_scan_tiled and gru_scan_grad_tiled: GRUs above the on-chip limit (64 units), 70 units in
    several chunks, with reset_after and without (its two phases a step), masked (ids 0 are
    padding); the barriers between chunks can only be checked on a GPU."""
    return Sequential([Input(shape=(7,), dtype="int32"), Embedding(VOCAB, 5, mask_zero=True),
                       GRU(70, return_sequences=True), GRU(70, reset_after=False), Dense(4, activation="softmax")])


def masked_dropout_sequences():
    """The LSTM scans with a step mask (ids 0: holes) and recurrent dropout masks in training, tiled
    (70 units: its masked steps pass dh through a scratch, behind the kernel's barriers) and on chip."""
    return Sequential([Input(shape=(7,), dtype="int32"), Embedding(VOCAB, 5, mask_zero=True),
                       LSTM(70, dropout=0.2, recurrent_dropout=0.3, return_sequences=True, seed=3),
                       LSTM(6, recurrent_dropout=0.3, seed=4), Dense(4, activation="softmax")])


def activations():
    """The scans with other activations than Keras's defaults (their generated hooks; the LSTM, the
    tiled GRU and both SimpleRNNs saving pre-activations), on chip and tiled. The tiled SimpleRNN's
    hard_sigmoid is bounded: a wide unbounded one grows h (wide_simple_rnns says why that drifts)."""
    return Sequential([Input(shape=(7, 5)), LSTM(6, activation="relu", recurrent_activation="hard_sigmoid",
                                                 return_sequences=True),
                       GRU(70, activation="gelu", recurrent_activation="hard_sigmoid", return_sequences=True),
                       SimpleRNN(70, activation="hard_sigmoid", return_sequences=True),
                       SimpleRNN(6, activation="elu"), Dense(4, activation="softmax")])


def masked_dropout_gru_rnns():
    """The GRU and SimpleRNN scans with a step mask (ids 0: holes) and recurrent dropout masks in
    training: tiled at 70 units (each gate's K-chunks times its mask; the GRU without reset_after
    masks h before the reset gate in its two-phase step) and on chip."""
    return Sequential([Input(shape=(7,), dtype="int32"), Embedding(VOCAB, 5, mask_zero=True),
                       GRU(70, dropout=0.2, recurrent_dropout=0.3, return_sequences=True, seed=3),
                       GRU(6, reset_after=False, recurrent_dropout=0.3, return_sequences=True, seed=4),
                       SimpleRNN(70, recurrent_dropout=0.3, return_sequences=True, seed=5),
                       SimpleRNN(6, dropout=0.2, recurrent_dropout=0.3, seed=6), Dense(4, activation="softmax")])


def embeddings():
    """embedding (its gather kernel in a training step, where the backward reads the embedded
    sequence), the LSTM projection gathering its rows through the ids (predict), embedding_grad."""
    return Sequential([Input(shape=(7,), dtype="int32"), Embedding(VOCAB, 5), LSTM(6), Dense(4, activation="softmax")])


def wide_simple_rnns():
    """simple_rnn_scan_tiled and simple_rnn_scan_grad_tiled: stacked SimpleRNNs above the on-chip
    limit (64 units), 70 units in several chunks, both masked (the ids data() draws hold zeros:
    Embedding(mask_zero=True) masks those steps). tanh both: with randomize's weights a relu layer
    of 70 units grows h about 4x a step and saturates the tanh layer above it, and two epochs of
    Adam drift apart (under the interpreter, without a mask: losses 2.91, 2.81 against the
    reference's 2.87, 2.65; the forward matches; the on-chip kernels at 60 units drift as
    well: 4.4414, 3.9436 against 4.4407, 3.9541; not traced further)."""
    return Sequential([Input(shape=(7,), dtype="int32"), Embedding(VOCAB, 5, mask_zero=True),
                       SimpleRNN(70, return_sequences=True), SimpleRNN(70), Dense(4, activation="softmax")])


CASES = {"mlp": mlp, "rows": rows, "cnn": cnn, "image_moves": image_moves, "separable_cnn": separable_cnn,
         "augmented_features": augmented_features, "sequences": sequences, "wide_sequences": wide_sequences,
         "wide_simple_rnns": wide_simple_rnns, "embeddings": embeddings, "wide_gru": wide_gru,
         "masked_dropout_sequences": masked_dropout_sequences, "masked_dropout_gru_rnns": masked_dropout_gru_rnns,
         "activations": activations}


def data(model, seed=0):
    """A ragged batch of inputs and class ids for `model`."""
    rng = np.random.default_rng(seed)
    shape = (BATCH, *model.inputs[0].shape[1:])
    if model.inputs[0].dtype in ("int32", "int64"):  # ids, 0 and the last among them
        x = rng.integers(0, VOCAB, shape).astype(model.inputs[0].dtype)
        x.flat[0], x.flat[-1] = 0, VOCAB - 1
    else:
        x = rng.normal(size=shape).astype("float32")
    y = rng.integers(0, model.outputs[0].shape[-1], BATCH)
    return x, y


def templates_used(make) -> dict[str, set[str]]:
    """{"predict": templates of the fused forward graph, "train": of the fused training step}."""
    from kcomp.compiler import BuildOptions, build_graphs

    used = {}
    for kind, train in (("predict", False), ("train", True)):
        model = make()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        built = build_graphs(model, BuildOptions(train=train), None)
        used[kind] = {n.attrs["template"] for n in built.fused.nodes if n.op == "kernel"}
    return used
