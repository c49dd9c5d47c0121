"""The layer modules."""
from .activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .attention import CausalSelfAttention
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from .dropout import Dropout
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .normalization import LayerNorm, RMSNorm
from .pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .sparse import Embedding
from .flatten import Flatten, Unflatten
from .loss import BCELoss, HuberLoss, KLDivLoss
from .batchnorm import BatchNorm1d, BatchNorm2d, GroupNorm
from .attention import MultiheadAttention
from .activation import ELU, Hardtanh, LeakyReLU, ReLU6, Softplus
from .pixelshuffle import (CircularPad1d, CircularPad2d, CircularPad3d, ConstantPad1d, ConstantPad2d,
                           ConstantPad3d, PixelShuffle, PixelUnshuffle, ReflectionPad1d,
                           ReflectionPad2d, ReflectionPad3d, ReplicationPad1d, ReplicationPad2d,
                           ReplicationPad3d, ZeroPad1d, ZeroPad2d, ZeroPad3d)
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
from .batchnorm import SyncBatchNorm
from .conv import Conv3d, ConvTranspose3d
from .pooling import AdaptiveMaxPool1d, AdaptiveMaxPool2d, MaxUnpool1d, MaxUnpool2d
from .upsampling import Fold, Unfold, Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from .activation import (CELU, GLU, SELU, Hardshrink, Hardsigmoid, Hardswish, LogSigmoid, Mish, PReLU,
                         RReLU, Softmax2d, Softmin, Softshrink, Softsign, Tanhshrink, Threshold)
from .dropout import AlphaDropout, Dropout1d, Dropout2d, Dropout3d, FeatureAlphaDropout
from .loss import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss, MarginRankingLoss,
                   MultiLabelMarginLoss, MultiLabelSoftMarginLoss, MultiMarginLoss, PoissonNLLLoss,
                   SoftMarginLoss, TripletMarginLoss, TripletMarginWithDistanceLoss)
from .distance import CosineSimilarity, PairwiseDistance
from .container import ParameterDict, ParameterList
from .linear import Bilinear, LazyLinear, UninitializedParameter
from .normalization import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LocalResponseNorm
from .sparse import EmbeddingBag
from .loss import CTCLoss
