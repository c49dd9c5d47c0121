"""Recurrent layers: RNNCell, LSTMCell, GRUCell and the multi-layer RNN, LSTM, GRU.

Everything is composed from differentiable ops (linear, sigmoid, tanh, relu, chunk,
stack, cat), so gradients of any order flow through the recurrence. Parameter names,
shapes, order and initialization follow PyTorch, so state dicts load unchanged."""
from __future__ import annotations

import math
import numbers
import warnings

from ...ops.creation import empty, zeros
from ...ops.pointwise import relu, sigmoid, tanh
from ...ops.shape import cat, split, stack, unbind
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..utils.rnn import PackedSequence

__all__ = ["RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "RNNBase", "RNN", "LSTM", "GRU"]


# ------------------------------------------------------------------ one step
# ``gi`` is the input projection ``x W_ih^T + b_ih`` (computed once for the whole
# sequence by the multi-layer modules); ``h`` / ``c`` are the previous states.
def _rnn_step(gi, h, w_hh, b_hh, act):
    return act(gi + F.linear(h, w_hh, b_hh))


def _lstm_step(gi, h, c, w_hh, b_hh, w_hr=None):
    gates = gi + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, -1)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h = sigmoid(o) * tanh(c)
    if w_hr is not None:
        h = F.linear(h, w_hr)
    return h, c


def _gru_step(gi, h, w_hh, b_hh):
    gh = F.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = tanh(i_n + r * h_n)
    return n + z * (h - n)


# --------------------------------------------------------------------- cells
class RNNCellBase(Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device=None, dtype=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(empty(num_chunks * hidden_size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(num_chunks * hidden_size, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        nl = self.__dict__.get("nonlinearity")
        if nl is not None and nl != "tanh":
            s += f", nonlinearity={nl}"
        return s

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _prepare(self, input, hx, what="hidden"):
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {hx.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(-1)} expected {self.input_size}")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        if tuple(hx.shape) != (input.size(0), self.hidden_size):
            raise RuntimeError(
                f"Expected {what} size {(input.size(0), self.hidden_size)}, got {list(hx.shape)}")
        return input, hx, is_batched


class RNNCell(RNNCellBase):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or ReLU)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        if self.nonlinearity == "tanh":
            act = tanh
        elif self.nonlinearity == "relu":
            act = relu
        else:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        input, hx, is_batched = self._prepare(input, hx)
        h = _rnn_step(F.linear(input, self.weight_ih, self.bias_ih), hx, self.weight_hh, self.bias_hh, act)
        return h if is_batched else h.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step; gates in PyTorch's order (input, forget, cell, output)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"{name}: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
            h0, c0 = hx
        else:
            h0 = c0 = None
        input2, h0, is_batched = self._prepare(input, h0, "hx[0]")
        _, c0, _ = self._prepare(input, c0, "hx[1]")
        h, c = _lstm_step(F.linear(input2, self.weight_ih, self.bias_ih), h0, c0, self.weight_hh, self.bias_hh)
        if not is_batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


class GRUCell(RNNCellBase):
    """One GRU step; gates in PyTorch's order (reset, update, new)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        input, hx, is_batched = self._prepare(input, hx)
        h = _gru_step(F.linear(input, self.weight_ih, self.bias_ih), hx, self.weight_hh, self.bias_hh)
        return h if is_batched else h.squeeze(0)


# --------------------------------------------------------------- multi-layer
class RNNBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] "
                             "representing the probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=3)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        gate_size = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}.get(mode)
        if gate_size is None:
            raise ValueError("Unrecognized RNN mode: " + mode)
        gate_size *= hidden_size

        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        real_hidden_size = proj_size if proj_size > 0 else hidden_size

        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input_size = input_size if layer == 0 else real_hidden_size * num_directions
                suffix = "_reverse" if direction == 1 else ""
                params = [("weight_ih_l{}{}", (gate_size, layer_input_size)),
                          ("weight_hh_l{}{}", (gate_size, real_hidden_size))]
                if bias:
                    params += [("bias_ih_l{}{}", (gate_size,)), ("bias_hh_l{}{}", (gate_size,))]
                if proj_size > 0:
                    params += [("weight_hr_l{}{}", (proj_size, hidden_size))]
                names = []
                for fmt, shape in params:
                    name = fmt.format(layer, suffix)
                    setattr(self, name, Parameter(empty(*shape, dtype=dtype, device=device)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _flat_weights(self):
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op: the weights are used as they are (kept for API compatibility)."""

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # -------------------------------------------------------------- helpers
    def _layer_params(self, layer, direction):
        suffix = "_reverse" if direction == 1 else ""
        get = lambda fmt: getattr(self, fmt.format(layer, suffix), None)  # noqa: E731
        return (get("weight_ih_l{}{}"), get("weight_hh_l{}{}"), get("bias_ih_l{}{}"),
                get("bias_hh_l{}{}"), get("weight_hr_l{}{}"))

    def _check_input(self, input):
        if input.dim() != 3:
            raise RuntimeError(f"input must have 3 dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {input.size(-1)}")

    def _check_hidden_size(self, hx, expected, msg="Expected hidden size {}, got {}"):
        if tuple(hx.shape) != tuple(expected):
            raise RuntimeError(msg.format(tuple(expected), list(hx.shape)))

    def _normalize(self, input, hx_list):
        """Unbatched / batch_first handling; returns time-major input, batched states, is_batched."""
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(self.mode, self.mode)
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
            if hx_list is not None:
                for h in hx_list:
                    if h.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {h.dim()}-D tensor")
                hx_list = [h.unsqueeze(1) for h in hx_list]
        elif hx_list is not None:
            for h in hx_list:
                if h.dim() != 3:
                    raise RuntimeError(
                        f"For batched 3-D input, hx should also be 3-D but got {h.dim()}-D tensor")
        if self.batch_first:
            input = input.transpose(0, 1)
        self._check_input(input)
        return input, hx_list, is_batched

    def _run(self, x, states, step, batch_sizes=None):
        """Runs every layer and direction over time-major ``x``; ``states`` is a list of
        per-state tensors of shape (num_layers*num_directions, batch, *). With
        ``batch_sizes`` (a packed sequence), ``x`` is the packed data and step ``t``
        updates only the first ``batch_sizes[t]`` rows of the states."""
        num_directions = 2 if self.bidirectional else 1
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for direction in range(num_directions):
                idx = layer * num_directions + direction
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_params(layer, direction)
                proj = F.linear(x, w_ih, b_ih)
                gis = unbind(proj, 0) if batch_sizes is None else split(proj, batch_sizes, 0)
                st = tuple(s[idx] for s in states)
                ys = [None] * len(gis)
                order = range(len(gis)) if direction == 0 else reversed(range(len(gis)))
                for t in order:
                    b = gis[t].shape[0]
                    if b == st[0].shape[0]:
                        st = step(gis[t], st, w_hh, b_hh, w_hr)
                    else:   # the sequences that have ended (or not begun) keep their states
                        new = step(gis[t], tuple(s[:b] for s in st), w_hh, b_hh, w_hr)
                        st = tuple(cat([n, s[b:]], 0) for n, s in zip(new, st))
                    ys[t] = st[0][:b]
                for k, s in enumerate(st):
                    finals[k].append(s)
                outs.append(stack(ys, 0) if batch_sizes is None else cat(ys, 0))
            x = outs[0] if num_directions == 1 else cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, [stack(f, 0) for f in finals]

    def _forward(self, input, hx_list, shapes, step):
        """The common forward: ``shapes(batch)`` gives the expected shape of each state
        and its error message; returns (output, final states) in the caller's layout
        (a PackedSequence in, a PackedSequence out)."""
        if isinstance(input, PackedSequence):
            x, batch_sizes, sorted_idx, unsorted_idx = input
            sizes = [int(b) for b in batch_sizes.tolist()]
            if x.dim() != 2:
                raise RuntimeError(f"packed input data must have 2 dimensions, got {x.dim()}")
            self._check_input(x.unsqueeze(0))
            if hx_list is not None and sorted_idx is not None:
                hx_list = [h.index_select(1, sorted_idx) for h in hx_list]
            batch, is_batched = sizes[0], True
        else:
            x, hx_list, is_batched = self._normalize(input, hx_list)
            sizes, batch = None, x.size(1)
        expected = shapes(batch)
        if hx_list is None:
            states = [zeros(*shape, dtype=x.dtype, device=x.device) for shape, _ in expected]
        else:
            states = list(hx_list)
            for h, (shape, msg) in zip(states, expected):
                self._check_hidden_size(h, shape, msg)
        out, finals = self._run(x, states, step, sizes)
        if sizes is None:
            return self._finish(out, finals, is_batched)
        if unsorted_idx is not None:
            finals = [f.index_select(1, unsorted_idx) for f in finals]
        return PackedSequence(out, batch_sizes, sorted_idx, unsorted_idx), finals

    def _hidden_shape(self, batch):
        num_directions = 2 if self.bidirectional else 1
        return [((self.num_layers * num_directions, batch, self.hidden_size), "Expected hidden size {}, got {}")]

    def _finish(self, output, finals, is_batched):
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            finals = [f.squeeze(1) for f in finals]
        return output, finals


class RNN(RNNBase):
    """Multi-layer Elman RNN with tanh or ReLU; ``forward`` returns (output, h_n)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        args = list(args)
        if len(args) > 3:
            nonlinearity = args.pop(3)
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        act = tanh if self.mode == "RNN_TANH" else relu

        def step(gi, st, w_hh, b_hh, w_hr):
            return (_rnn_step(gi, st[0], w_hh, b_hh, act),)

        out, finals = self._forward(input, None if hx is None else [hx], self._hidden_shape, step)
        return out, finals[0]


class LSTM(RNNBase):
    """Multi-layer LSTM (optionally with projections); ``forward`` returns
    (output, (h_n, c_n))."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input, hx=None):
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            hx = list(hx)
        num_directions = 2 if self.bidirectional else 1
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size

        def shapes(batch):
            return [((self.num_layers * num_directions, batch, real_hidden), "Expected hidden[0] size {}, got {}"),
                    ((self.num_layers * num_directions, batch, self.hidden_size),
                     "Expected hidden[1] size {}, got {}")]

        def step(gi, st, w_hh, b_hh, w_hr):
            return _lstm_step(gi, st[0], st[1], w_hh, b_hh, w_hr)

        out, (h_n, c_n) = self._forward(input, hx, shapes, step)
        return out, (h_n, c_n)


class GRU(RNNBase):
    """Multi-layer GRU; ``forward`` returns (output, h_n)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input, hx=None):
        def step(gi, st, w_hh, b_hh, w_hr):
            return (_gru_step(gi, st[0], w_hh, b_hh),)

        out, finals = self._forward(input, None if hx is None else [hx], self._hidden_shape, step)
        return out, finals[0]
