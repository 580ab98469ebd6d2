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
from kcomp.layers.core import (
    Activation, Dense, Dropout, Embedding, Flatten, Input, InputLayer, LeakyReLU, Masking, Permute, ReLU, Reshape,
    Softmax, SpatialDropout1D,
)
from kcomp.layers.merge import Add, Average, Concatenate, Maximum, Multiply, Subtract
from kcomp.layers.normalization import BatchNormalization, LayerNormalization
from kcomp.layers.recurrent import GRU, LSTM, SimpleRNN
from kcomp.layers.time_distributed import TimeDistributed

# Keras's short aliases.
Convolution1D = Conv1D
Convolution2D = Conv2D
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
    "BatchNormalization", "Bidirectional", "Concatenate", "Conv1D", "Conv2D", "Convolution1D", "Convolution2D", "Dense", "Dropout",
    "Embedding", "Flatten", "GRU", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "Input", "InputLayer", "KerasTensor", "LSTM", "Layer", "LayerNormalization", "LeakyReLU", "MaxPool1D",
    "Masking", "MaxPool2D", "MaxPooling1D", "MaxPooling2D", "Maximum", "Multiply", "Permute", "ReLU", "Reshape", "SimpleRNN",
    "Softmax", "SpatialDropout1D", "Subtract", "TimeDistributed", "Variable",
    "RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom",
]
