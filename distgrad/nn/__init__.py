"""Neural-network building blocks: ``Module``, ``Parameter``, layers, losses, init."""
from . import functional, init, parallel, utils
from .module import Module
from .modules import (GELU, BCEWithLogitsLoss, CausalSelfAttention, CrossEntropyLoss, Dropout,
                      Embedding, Identity, L1Loss, LayerNorm, Linear, LogSoftmax, ModuleDict,
                      ModuleList, MSELoss, NLLLoss, ReLU, RMSNorm, Sequential, Sigmoid, SiLU,
                      SmoothL1Loss, Softmax, Tanh)
from .parameter import Buffer, Parameter
