"""Layers and models: ``Module``, ``Parameter``, containers, basic layers, attention,
transformer blocks and GPT. ``minilm.nn.init`` has the initialisation schemes."""

from . import init
from .attention import (
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    build_attention_mask,
    sinusoidal_positions,
)
from .bert import (
    BertConfig,
    BertEmbeddings,
    BertEncoder,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertLayer,
    BertModel,
    BertPooler,
    SentenceEncoder,
    mean_pool,
    normalize,
)
from .classifiers import DropConnectLinear, RNNClassifier, TextCNN, TransformerEncoderClassifier
from .conv import AvgPool1d, Conv1d, MaxPool1d
from .layers import (
    GELU,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    RMSNorm,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential
from .pretrained_classifier import GPTClassifier
from .recurrent import GRU, LSTM, RNN, detach_state
from .seq2seq import LSTMSeq2Seq, TransformerSeq2Seq
from .transformer import GPT, MLP, GPTConfig, TransformerBlock
