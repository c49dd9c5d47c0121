"""Stochastic weight averaging and exponential moving averages of a model's weights
(``torch.optim.swa_utils``): ``AveragedModel``, ``SWALR``, ``update_bn`` and the
averaging functions, with PyTorch's formulas."""
from __future__ import annotations

import itertools
import math
import warnings
from copy import deepcopy

import numpy as np
from ..dtype import kind_of as _kind_of

from ..autograd.grad_mode import no_grad
from ..tensor import Tensor, _wrap
from .lr_scheduler import LRScheduler, _format_param
from .optimizer import _lerp_

__all__ = ["AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn",
           "get_ema_avg_fn", "get_swa_avg_fn"]


def _lerp_list_(averaged, current, weight: float) -> None:
    for a, c in zip(averaged, current):
        x = a._data
        _lerp_(x, c._data, weight, x.dtype.type)
        a._vc[0] += 1


def _is_floating(t: Tensor) -> bool:
    return _kind_of(t._data.dtype) in "fc"


def get_ema_multi_avg_fn(decay=0.999):
    """In-place exponential moving average over lists of tensors:
    ``ema.lerp_(current, 1 - decay)``."""
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def ema_update(ema_param_list, current_param_list, _):
        if _is_floating(ema_param_list[0]):
            _lerp_list_(ema_param_list, current_param_list, 1 - decay)
        else:
            with no_grad():
                for p_ema, p_model in zip(ema_param_list, current_param_list):
                    p_ema.copy_(p_ema * decay + p_model * (1 - decay))

    return ema_update


def get_swa_multi_avg_fn():
    """In-place running mean over lists of tensors: ``avg.lerp_(current, 1 / (n + 1))``."""

    def swa_update(averaged_param_list, current_param_list, num_averaged):
        if _is_floating(averaged_param_list[0]):
            if isinstance(num_averaged, Tensor):
                # PyTorch's ``1 / (n + 1)`` of an integer tensor: a float32 weight
                weight = float(np.float32(1.0 / (int(num_averaged.item()) + 1)))
            else:
                weight = 1.0 / (num_averaged + 1)
            _lerp_list_(averaged_param_list, current_param_list, weight)
        else:
            with no_grad():
                for a, c in zip(averaged_param_list, current_param_list):
                    a.add_((c - a) / (num_averaged + 1))

    return swa_update


def get_ema_avg_fn(decay=0.999):
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def ema_update(ema_param, current_param, num_averaged):
        with no_grad():
            return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn():
    def swa_update(averaged_param, current_param, num_averaged):
        with no_grad():
            return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


def _module_base():
    from ..nn import Module

    return Module


class AveragedModel(_module_base()):
    """A copy of ``model`` whose parameters (and with ``use_buffers=True`` its buffers)
    are averaged by ``update_parameters(model)``: a running mean by default (SWA), or
    ``avg_fn(avg, current, n)`` / in-place ``multi_avg_fn(avgs, currents, n)`` (for
    instance ``get_ema_multi_avg_fn(0.999)``). ``n_averaged`` is a buffer."""

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", _wrap(np.zeros((), np.int64)))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def update_parameters(self, model) -> None:
        if self.use_buffers:
            self_param = itertools.chain(self.module.parameters(), self.module.buffers())
            model_param = itertools.chain(model.parameters(), model.buffers())
        else:
            self_param, model_param = self.parameters(), model.parameters()
        averaged, current = [], []
        n = int(self.n_averaged.item())
        for p_avg, p_model in zip(self_param, model_param):
            p_model_ = p_model.detach()
            averaged.append(p_avg.detach())
            current.append(p_model_)
            if n == 0:
                p_avg._data[...] = p_model_._data
                p_avg._vc[0] += 1
        if n > 0:
            if self.multi_avg_fn is not None:
                self.multi_avg_fn(averaged, current, self.n_averaged)
            elif self.avg_fn is None:  # the running mean, as PyTorch computes it on the CPU
                for p_avg, p_model in zip(averaged, current):
                    x = p_avg._data
                    new = x + (p_model._data - x) / (n + 1)
                    x[...] = new if _kind_of(x.dtype) in "fc" else np.trunc(new)
                    p_avg._vc[0] += 1
            else:
                for p_avg, p_model in zip(averaged, current):
                    p_avg._data[...] = self.avg_fn(p_avg, p_model, self.n_averaged)._data
                    p_avg._vc[0] += 1
        if not self.use_buffers:
            for b_swa, b_model in zip(self.module.buffers(), model.buffers()):
                b_swa._data[...] = b_model.detach()._data
                b_swa._vc[0] += 1
        self.n_averaged._data += 1
        self.n_averaged._vc[0] += 1


def update_bn(loader, model, device=None) -> None:
    """Recomputes the running statistics of every batch-norm layer of ``model`` with
    one pass over ``loader`` (a cumulative average, ``momentum=None``)."""
    from ..nn.modules.batchnorm import _BatchNorm

    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    with no_grad():
        for input in loader:
            if isinstance(input, (list, tuple)):
                input = input[0]
            if device is not None:
                input = input.to(device)
            model(input)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneals each group's rate to ``swa_lr`` over ``anneal_epochs`` steps (``cos`` or
    ``linear``), then holds it there."""

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1):
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for lr, group in zip(swa_lrs, optimizer.param_groups):
            group["swa_lr"] = lr
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self):
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                          UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [self._get_initial_lr(g["lr"], g["swa_lr"], prev_alpha) for g in self.optimizer.param_groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [g["swa_lr"] * alpha + lr * (1 - alpha) for g, lr in zip(self.optimizer.param_groups, prev_lrs)]

    def _set_anneal_func(self, anneal_strategy) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
