"""Keras's layers, with Keras's names, arguments, defaults and weight layouts."""

from kcomp.layers.base import KerasTensor, Layer, Variable
from kcomp.layers.bidirectional import Bidirectional
from kcomp.layers.conv import AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from kcomp.layers.core import (
    Activation, Dense, Dropout, Embedding, Flatten, Input, InputLayer, LeakyReLU, Permute, ReLU, Reshape, Softmax,
)
from kcomp.layers.merge import Add, Average, Concatenate, Maximum, Multiply, Subtract
from kcomp.layers.normalization import BatchNormalization, LayerNormalization
from kcomp.layers.recurrent import GRU, LSTM, SimpleRNN

# Keras's short aliases.
Convolution2D = Conv2D
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D

__all__ = [
    "Activation", "Add", "AveragePooling2D", "AvgPool2D", "Average", "BatchNormalization", "Bidirectional", "Concatenate",
    "Conv2D", "Convolution2D", "Dense", "Dropout", "Embedding", "Flatten", "GRU", "GlobalAvgPool2D",
    "GlobalAveragePooling2D", "GlobalMaxPool2D", "GlobalMaxPooling2D", "Input", "InputLayer", "KerasTensor",
    "LSTM", "Layer", "LayerNormalization", "LeakyReLU", "MaxPool2D", "MaxPooling2D", "Maximum", "Multiply",
    "Permute", "ReLU", "Reshape", "SimpleRNN", "Softmax", "Subtract", "Variable",
]
