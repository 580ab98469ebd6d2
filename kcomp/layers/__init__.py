"""Keras's layers, with Keras's names, arguments, defaults and weight layouts."""

from kcomp.layers.base import Layer, Variable
from kcomp.layers.augmentation import (
    RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom,
)
from kcomp.layers.tensors import KerasTensor
from kcomp.layers.bidirectional import Bidirectional
from kcomp.layers.conv import (
    AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D,
)
from kcomp.layers.activation_layers import ELU, Activation, LeakyReLU, PReLU, ReLU, Softmax
from kcomp.layers.conv_variants import Conv2DTranspose, DepthwiseConv2D, SeparableConv2D
from kcomp.layers.core import (
    Dense, Dropout, Embedding, Flatten, Input, InputLayer, Masking, Permute, Reshape, SpatialDropout1D, SpatialDropout2D,
)
from kcomp.layers.merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from kcomp.layers.normalization import BatchNormalization, LayerNormalization
from kcomp.layers.preprocessing import CenterCrop, Normalization, Rescaling, Resizing
from kcomp.layers.recurrent import GRU, LSTM, SimpleRNN
from kcomp.layers.reshaping import (
    Cropping1D, Cropping2D, RepeatVector, UpSampling1D, UpSampling2D, ZeroPadding1D, ZeroPadding2D,
)
from kcomp.layers.time_distributed import TimeDistributed

# Keras's short aliases.
Convolution1D = Conv1D
Convolution2D = Conv2D
Convolution2DTranspose = Conv2DTranspose
SeparableConvolution2D = SeparableConv2D
MaxPool1D = MaxPooling1D
MaxPool2D = MaxPooling2D
AvgPool1D = AveragePooling1D
AvgPool2D = AveragePooling2D
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool1D = GlobalMaxPooling1D
GlobalMaxPool2D = GlobalMaxPooling2D

__all__ = [
    "Activation", "Add", "AveragePooling1D", "AveragePooling2D", "AvgPool1D", "AvgPool2D", "Average",
    "BatchNormalization", "Bidirectional", "Concatenate", "Conv1D", "Conv2D", "Convolution1D", "Convolution2D", "Dense",
    "Conv2DTranspose", "Convolution2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "SeparableConvolution2D", "Dropout",
    "Embedding", "Flatten", "GRU", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "Input", "InputLayer", "KerasTensor", "LSTM", "Layer", "LayerNormalization", "LeakyReLU", "MaxPool1D",
    "Masking", "MaxPool2D", "MaxPooling1D", "MaxPooling2D", "Maximum", "Multiply", "Permute", "ReLU", "Reshape", "SimpleRNN",
    "Softmax", "SpatialDropout1D", "Subtract", "TimeDistributed", "Variable",
    "CenterCrop", "Normalization", "Rescaling", "Resizing",
    # The image and merge layers of issue 15 (part 3).
    "Cropping1D", "Cropping2D", "Dot", "ELU", "Minimum", "PReLU", "RepeatVector", "SpatialDropout2D", "UpSampling1D",
    "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D",
    "RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom",
]
