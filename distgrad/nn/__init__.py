"""Neural-network building blocks: ``Module``, ``Parameter``, layers, losses, init."""
from . import functional, init, parallel, utils
from .module import Module
from .modules import (GELU, BCEWithLogitsLoss, CausalSelfAttention, CrossEntropyLoss, Dropout,
                      Embedding, Identity, L1Loss, LayerNorm, Linear, LogSoftmax, ModuleDict,
                      ModuleList, MSELoss, NLLLoss, ReLU, RMSNorm, Sequential, Sigmoid, SiLU,
                      SmoothL1Loss, Softmax, Tanh)
from .modules import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, Conv1d, Conv2d,
                      ConvTranspose1d, ConvTranspose2d, MaxPool1d, MaxPool2d)
from .parameter import Buffer, Parameter
from .modules import Flatten, Unflatten
from .modules import BCELoss, HuberLoss, KLDivLoss
from .modules import BatchNorm1d, BatchNorm2d, GroupNorm
from .modules import MultiheadAttention
