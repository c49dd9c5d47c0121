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
from .modules import ELU, Hardtanh, LeakyReLU, ReLU6, Softplus
from .modules import (CircularPad1d, CircularPad2d, CircularPad3d, ConstantPad1d, ConstantPad2d,
                      ConstantPad3d, PixelShuffle, PixelUnshuffle, ReflectionPad1d, ReflectionPad2d,
                      ReflectionPad3d, ReplicationPad1d, ReplicationPad2d, ReplicationPad3d,
                      ZeroPad1d, ZeroPad2d, ZeroPad3d)
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .modules import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                      TransformerEncoderLayer)
from .modules import SyncBatchNorm
from .modules import (AdaptiveMaxPool1d, AdaptiveMaxPool2d, Conv3d, ConvTranspose3d, Fold, MaxUnpool1d,
                      MaxUnpool2d, Unfold, Upsample, UpsamplingBilinear2d, UpsamplingNearest2d)
from .modules import (CELU, GLU, SELU, Hardshrink, Hardsigmoid, Hardswish, LogSigmoid, Mish, PReLU,
                      RReLU, Softmax2d, Softmin, Softshrink, Softsign, Tanhshrink, Threshold)
from .modules import AlphaDropout, Dropout1d, Dropout2d, Dropout3d, FeatureAlphaDropout
from .modules import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss, MarginRankingLoss,
                      MultiLabelMarginLoss, MultiLabelSoftMarginLoss, MultiMarginLoss, PoissonNLLLoss,
                      SoftMarginLoss, TripletMarginLoss, TripletMarginWithDistanceLoss)
from .modules import CosineSimilarity, PairwiseDistance
from .modules import ParameterDict, ParameterList
from .modules import Bilinear, LazyLinear, UninitializedParameter
from .modules import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LocalResponseNorm
from .modules import EmbeddingBag
from .modules import CTCLoss
