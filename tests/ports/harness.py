"""Run one ported program under distgrad (through ``torch_shim``) or under real PyTorch,
and write what it computed to an ``.npz`` file for ``test_ports.py`` to compare.

    python harness.py {distgrad,torch} OUTDIR PROGRAM [PROGRAM ...]

writes OUTDIR/PROGRAM.npz for each program, which runs in its own working directory
OUTDIR/PROGRAM (where its checkpoint files land). Several programs in one process
share the patches below; the random stream and the loss record restart for each.

The program file is run unedited (``runpy.run_path`` as ``__main__``). To make the
two runs start from the same numbers, this harness, in *both* backends alike:

- draws every random number the program asks ``torch`` for (``randn``, ``rand``,
  ``randint``, ``randn_like``, ``rand_like``, ``randperm``) and every shuffle order of
  ``RandomSampler`` from one numpy ``RandomState(0)`` stream (the two libraries' own
  generators differ, see the README);
- re-initializes each ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ConvTranspose2d`` right after
  its constructor with PyTorch's default distribution, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  for weight and bias, drawn from the same stream (so construction order decides the
  values); likewise ``nn.RNN`` / ``LSTM`` / ``GRU`` and their cells (every parameter
  U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))), ``nn.Embedding`` (N(0, 1)) and
  ``nn.Transformer`` (Xavier-uniform matrices, feed-forward biases as ``nn.Linear``'s);
- draws the values of ``nn.init.uniform_ / normal_`` and ``Tensor.uniform_ / normal_``
  called by the program from the same stream (inside those constructors, and in the
  library's own ``orthogonal_``, the library's generator is left to run);
- lets ``nn.init.orthogonal_`` run in the library (and checks that its result is
  orthogonal up to ``gain``), then overwrites the tensor with PyTorch's algorithm
  applied to normals from the same stream (a numpy QR), so both libraries start from
  identical orthogonal weights;
- sets the default dtype the program entry asks for (float64 for tight comparisons);
- records the value of every call of the loss functions in ``torch.nn.functional``
  (the loss modules call these), in call order;
- provides stand-ins for packages the programs import that are not under test:
  ``torchvision`` (``datasets.MNIST`` as a small synthetic data set of 28x28 uint8
  images and labels drawn from ``RandomState(1234)``, ``transforms.ToTensor``,
  ``transforms.Compose`` and ``transforms.Normalize`` as torchvision's, ``datasets.
  FakeData`` as random RGB images from ``RandomState(1234)``, and a ``utils.save_image``
  that only checks its argument) and ``matplotlib`` (``use`` and the ``pyplot`` drawing
  calls do nothing). Nothing is downloaded.

After the program ends, the harness saves the recorded losses and the state dict of
every ``nn.Module`` left in the program's globals.
"""
import importlib.util
import math
import os
import runpy
import subprocess
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS_DIR = os.path.join(HERE, "programs")

# name -> how to run it. "script": run the file as __main__ with argv.
# "model": import the file and train the model it defines for a few steps (driver below).
PROGRAMS = {
    "examples_regression": dict(kind="script", path="examples_regression/main.py", dtype="float64"),
    "yunjey_linear_regression": dict(kind="script", path="yunjey_linear_regression/main.py",
                                     dtype="float32"),
    "yunjey_logistic_regression": dict(kind="script", path="yunjey_logistic_regression/main.py",
                                       dtype="float64", mnist=(300, 100)),
    "yunjey_feedforward": dict(kind="script", path="yunjey_feedforward/main.py", dtype="float64",
                               mnist=(200, 100)),
    "yunjey_cnn": dict(kind="script", path="yunjey_cnn/main.py", dtype="float64", mnist=(100, 100)),
    "yunjey_vae": dict(kind="script", path="yunjey_vae/main.py", dtype="float64", mnist=(160, 0)),
    "kuangliu_lenet": dict(kind="model", path="kuangliu_cifar/lenet.py", build="LeNet()",
                           dtype="float64", batch=8, steps=4),
    "kuangliu_lenet_float32": dict(kind="model", path="kuangliu_cifar/lenet.py", build="LeNet()",
                                   dtype="float32", batch=8, steps=4),
    "kuangliu_resnet18": dict(kind="model", path="kuangliu_cifar/resnet.py", build="ResNet18()",
                              dtype="float64", batch=2, steps=2),
    "kuangliu_preact_resnet18": dict(kind="model", path="kuangliu_cifar/preact_resnet.py",
                                     build="PreActResNet18()", dtype="float64", batch=2, steps=2),
    "kuangliu_mobilenetv2": dict(kind="model", path="kuangliu_cifar/mobilenetv2.py",
                                 build="MobileNetV2()", dtype="float64", batch=2, steps=2),
    "kuangliu_vgg11": dict(kind="model", path="kuangliu_cifar/vgg.py", build="VGG('VGG11')",
                           dtype="float64", batch=2, steps=2),
    "yunjey_gan": dict(kind="script", path="yunjey_gan/main.py", dtype="float64", mnist=(100, 0)),
    "examples_super_resolution": dict(kind="model", path="examples_super_resolution/model.py",
                                      build="Net(upscale_factor=3)", driver="super_resolution",
                                      dtype="float64", batch=4, steps=4),
    # its training data, traindata.pt, is written by its own generate_sine_wave.py (with
    # torch.save), shrunk to SINE_WAVE_SHAPE; numpy's array globals are allowlisted for its
    # torch.load (see prepare_sine_wave)
    "examples_time_sequence_prediction": dict(kind="script",
                                              path="examples_time_sequence_prediction/train.py",
                                              dtype="float64", argv=["--steps", "1"],
                                              prepare="sine_wave"),
    "examples_dcgan": dict(kind="script", path="examples_dcgan/main.py", dtype="float64",
                           fakedata=4,
                           argv=["--dataset", "fake", "--workers", "0", "--batchSize", "2",
                                 "--nz", "8", "--ngf", "4", "--ndf", "4", "--niter", "1",
                                 "--manualSeed", "1"]),
    "yunjey_rnn": dict(kind="script", path="yunjey_rnn/main.py", dtype="float64",
                       mnist=(200, 100)),
    "yunjey_birnn": dict(kind="script", path="yunjey_birnn/main.py", dtype="float64",
                         mnist=(100, 100)),
}
# word_language_model/model.py: the driver below trains as its main.py does (dropout 0:
# the two libraries' dropout masks cannot be made the same)
WLM_NTOKENS = 50
for _rnn_type, _tied in (("LSTM", False), ("GRU", True), ("RNN_TANH", False)):
    PROGRAMS[f"examples_word_language_model_{_rnn_type.lower()}"] = dict(
        kind="model", path="examples_word_language_model/model.py",
        build=f"RNNModel({_rnn_type!r}, {WLM_NTOKENS}, 16, 16, 2, dropout=0.0, "
              f"tie_weights={_tied})",
        driver="word_language_model", dtype="float64", batch=4, steps=4)
PROGRAMS["examples_word_language_model_transformer"] = dict(
    kind="model", path="examples_word_language_model/model.py",
    build=f"TransformerModel({WLM_NTOKENS}, 16, 2, 16, 2, dropout=0.0)",
    driver="word_language_model", dtype="float64", batch=4, steps=4)

# time_sequence_prediction's traindata.pt: the first rows and columns of the 100 x 1000
# sine waves its generate_sine_wave.py writes
SINE_WAVE_SHAPE = (6, 60)
# the globals of a pickled numpy float64 array, which torch.load (weights_only, the
# default since PyTorch 2.6) refuses unless allowlisted, as PyTorch's error message says
NUMPY_ARRAY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                       type(np.dtype(np.float64))]

LOSS_FUNCTIONS = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy",
                  "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                  "kl_div"]

RNG = np.random.RandomState(0)   # reset for each program
MNIST_SIZES = (0, 0)             # (train, test) sizes of the MNIST stand-in, set per program
FAKEDATA_SIZE = 0                # images in the FakeData stand-in, set per program
LOSSES = []          # (function name, value)
BACKEND = None       # "distgrad" or "torch"
HAVE_REAL_TORCH = False


def _size(args, kwargs):
    if "size" in kwargs:
        args = (kwargs.pop("size"),)
    if len(args) == 1 and isinstance(args[0], (tuple, list)) or (
            len(args) == 1 and type(args[0]).__name__ == "Size"):
        return tuple(int(s) for s in args[0])
    return tuple(int(s) for s in args)


def patch_random(torch):
    def make(arr, dtype, requires_grad=False):
        t = torch.tensor(np.ascontiguousarray(arr),
                         dtype=dtype if dtype is not None else torch.get_default_dtype())
        return t.requires_grad_(requires_grad) if requires_grad else t

    def randn(*args, dtype=None, device=None, requires_grad=False, generator=None, **kw):
        return make(RNG.standard_normal(_size(args, kw)), dtype, requires_grad)

    def rand(*args, dtype=None, device=None, requires_grad=False, generator=None, **kw):
        return make(RNG.random_sample(_size(args, kw)), dtype, requires_grad)

    def randn_like(t, dtype=None, **kw):
        return make(RNG.standard_normal(tuple(t.shape)), dtype or t.dtype)

    def rand_like(t, dtype=None, **kw):
        return make(RNG.random_sample(tuple(t.shape)), dtype or t.dtype)

    def randint(*args, dtype=None, device=None, generator=None, **kw):
        low = kw.pop("low", 0)
        if "high" in kw:
            high = kw.pop("high")
            size = _size(args, kw)
        elif len(args) >= 3 or (len(args) == 2 and not isinstance(args[1], (tuple, list))):
            low, high, size = args[0], args[1], _size(args[2:], kw)
        else:
            high, size = args[0], _size(args[1:], kw)
        return torch.tensor(RNG.randint(low, high, size=size), dtype=dtype or torch.int64)

    def randperm(n, *, dtype=None, generator=None, **kw):
        return torch.tensor(RNG.permutation(n), dtype=dtype or torch.int64)

    for name, fn in dict(randn=randn, rand=rand, randn_like=randn_like, rand_like=rand_like,
                         randint=randint, randperm=randperm).items():
        setattr(torch, name, fn)

    def sampler_iter(self):
        if getattr(self, "replacement", False):
            raise NotImplementedError("harness: RandomSampler(replacement=True) not handled")
        yield from RNG.permutation(len(self.data_source)).tolist()

    torch.utils.data.RandomSampler.__iter__ = sampler_iter


def _fill(tensor, arr, torch):
    with torch.no_grad():
        tensor.copy_(torch.tensor(np.ascontiguousarray(arr), dtype=tensor.dtype))


def _reinit_fan_in(module, torch):
    """nn.Linear / nn.Conv2d / nn.ConvTranspose2d: U(+-1/sqrt(fan_in)), fan_in as PyTorch
    computes it from the weight's shape (dim 1 times the kernel size)."""
    weight = module.weight
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    bound = 1.0 / math.sqrt(fan_in)
    for name in ("weight", "bias"):
        p = getattr(module, name, None)
        if p is not None:
            _fill(p, RNG.uniform(-bound, bound, size=tuple(p.shape)), torch)


def _reinit_recurrent(module, torch):
    """nn.RNN / LSTM / GRU and their cells: every parameter U(+-1/sqrt(hidden_size)), as
    PyTorch, drawn in the order of the parameters' names."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for _, p in sorted(module.named_parameters()):
        _fill(p, RNG.uniform(-bound, bound, size=tuple(p.shape)), torch)


def _reinit_embedding(module, torch):
    """nn.Embedding: N(0, 1), the padding row zero, as PyTorch."""
    arr = RNG.standard_normal(tuple(module.weight.shape))
    if module.padding_idx is not None:
        arr[module.padding_idx] = 0.0
    _fill(module.weight, arr, torch)


# depth of the patched constructors (and library initializers) running: the library's own
# random initializations inside them are left alone
CONSTRUCTING = [0]


def _reinit_transformer(module, torch):
    """nn.Transformer: as PyTorch's constructor leaves it, every matrix Xavier-uniform
    (its ``_reset_parameters``), the feed-forward ``Linear`` biases U(+-1/sqrt(fan_in));
    the attention biases (zeros) and the LayerNorms (ones, zeros) are deterministic."""
    for _, p in sorted(module.named_parameters()):
        if p.dim() > 1:
            receptive = math.prod(p.shape[2:])
            fan_in, fan_out = p.shape[1] * receptive, p.shape[0] * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            _fill(p, RNG.uniform(-bound, bound, size=tuple(p.shape)), torch)
    out_projs = {id(m.out_proj) for m in module.modules()
                 if isinstance(m, torch.nn.MultiheadAttention)}
    for _, m in sorted(module.named_modules(), key=lambda item: item[0]):
        if isinstance(m, torch.nn.Linear) and m.bias is not None and id(m) not in out_projs:
            bound = 1.0 / math.sqrt(m.in_features)
            _fill(m.bias, RNG.uniform(-bound, bound, size=tuple(m.bias.shape)), torch)


def patch_init(torch):
    nn = torch.nn
    reinit = {nn.Linear: _reinit_fan_in, nn.Conv2d: _reinit_fan_in,
              nn.ConvTranspose2d: _reinit_fan_in, nn.Embedding: _reinit_embedding}
    for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
        reinit[getattr(nn, name)] = _reinit_recurrent
    if hasattr(nn, "Transformer"):
        reinit[nn.Transformer] = _reinit_transformer
    for cls, fn in reinit.items():
        original = cls.__init__

        def __init__(self, *args, __original=original, __fn=fn, **kwargs):
            CONSTRUCTING[0] += 1
            try:
                __original(self, *args, **kwargs)
            finally:
                CONSTRUCTING[0] -= 1
            if CONSTRUCTING[0] == 0:   # the outermost patched constructor (not a super() call)
                __fn(self, torch)

        cls.__init__ = __init__


def patch_init_functions(torch):
    """``nn.init.uniform_ / normal_`` and ``Tensor.uniform_ / normal_`` called by the
    program draw from RNG (inside the patched constructors the library's own run)."""
    init = torch.nn.init
    draws = {"uniform_": lambda shape, a=0.0, b=1.0: RNG.uniform(a, b, size=shape),
             "normal_": lambda shape, mean=0.0, std=1.0: RNG.normal(mean, std, size=shape)}
    for owner in (init, torch.Tensor):
        for name, draw in draws.items():
            original = getattr(owner, name)

            def patched(tensor, *args, __original=original, __draw=draw, generator=None, **kw):
                if CONSTRUCTING[0]:
                    return __original(tensor, *args, **kw)
                _fill(tensor, __draw(tuple(tensor.shape), *args, **kw), torch)
                return tensor

            setattr(owner, name, patched)


def _orthogonal(shape, gain):
    """PyTorch's ``nn.init.orthogonal_`` algorithm on normals drawn from RNG (numpy QR)."""
    rows = shape[0]
    cols = math.prod(shape[1:])
    flat = RNG.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def patch_orthogonal(torch):
    """Call the library's own ``orthogonal_`` (checking its result is orthogonal, scaled by
    ``gain``), then overwrite the tensor with ``_orthogonal``, the same in both libraries."""
    init = torch.nn.init
    original = init.orthogonal_

    def orthogonal_(tensor, gain=1, generator=None):
        CONSTRUCTING[0] += 1   # its own normals come from the library's generator
        try:
            out = original(tensor, gain)
        finally:
            CONSTRUCTING[0] -= 1
        assert out is tensor
        rows = tensor.shape[0]
        w = np.asarray(tensor.detach().numpy(), dtype=np.float64).reshape(rows, -1)
        small = w @ w.T if rows <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(small, gain ** 2 * np.eye(small.shape[0]),
                                   atol=1e-4 * max(gain ** 2, 1))
        with torch.no_grad():
            tensor.copy_(torch.tensor(_orthogonal(tuple(tensor.shape), gain), dtype=tensor.dtype))
        return tensor

    init.orthogonal_ = orthogonal_


def patch_losses(torch):
    F = torch.nn.functional
    for name in LOSS_FUNCTIONS:
        original = getattr(F, name, None)
        if original is None:
            continue

        def wrapped(*args, __original=original, __name=name, **kwargs):
            out = __original(*args, **kwargs)
            if out.numel() == 1:
                LOSSES.append((__name, float(out.detach().reshape(()).item())))
            return out

        setattr(F, name, wrapped)


def install_stand_ins(torch):
    """``torchvision`` and ``matplotlib.pyplot`` stand-ins (see the module docstring)."""
    tv = types.ModuleType("torchvision")
    datasets = types.ModuleType("torchvision.datasets")
    transforms = types.ModuleType("torchvision.transforms")
    utils = types.ModuleType("torchvision.utils")

    class ToTensor:
        def __call__(self, img):  # HxW or HxWxC uint8 -> CxHxW in [0, 1], the default dtype
            arr = np.asarray(img, dtype=np.float64) / 255.0   # (as torchvision)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            return torch.tensor(np.ascontiguousarray(arr), dtype=torch.get_default_dtype())

    class MNIST:
        def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
            n_train, n_test = MNIST_SIZES
            n = n_train if train else n_test
            rs = np.random.RandomState(1234 if train else 4321)
            self.data = rs.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
            self.targets = rs.randint(0, 10, size=n)
            self.transform = transform

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            img = self.data[i]
            if self.transform is not None:
                img = self.transform(img)
            return img, int(self.targets[i])

    class FakeData:
        """torchvision's FakeData: random RGB images (HxWxC uint8, as the PIL images it
        makes) and class labels; its ``size`` is the harness's (``FAKEDATA_SIZE``)."""

        def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None,
                     target_transform=None, random_offset=0):
            c, h, w = image_size
            rs = np.random.RandomState(1234)
            self.data = rs.randint(0, 256, size=(FAKEDATA_SIZE, h, w, c)).astype(np.uint8)
            self.targets = rs.randint(0, num_classes, size=FAKEDATA_SIZE)
            self.transform = transform

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            img = self.data[i]
            if self.transform is not None:
                img = self.transform(img)
            return img, int(self.targets[i])

    def save_image(tensor, fp, *args, **kwargs):
        assert tensor.ndim == 4 and tensor.shape[1] in (1, 3), tuple(tensor.shape)

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, img):
            for t in self.transforms:
                img = t(img)
            return img

    class Normalize:  # as torchvision's, per channel: (x - mean) / std
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, x):
            shape = (-1,) + (1,) * (x.ndim - 1)
            mean = torch.tensor(np.asarray(self.mean, dtype=np.float64).reshape(shape), dtype=x.dtype)
            std = torch.tensor(np.asarray(self.std, dtype=np.float64).reshape(shape), dtype=x.dtype)
            return (x - mean) / std

    datasets.MNIST = MNIST
    datasets.FakeData = FakeData
    transforms.ToTensor = ToTensor
    transforms.Compose = Compose
    transforms.Normalize = Normalize
    utils.save_image = save_image
    tv.datasets, tv.transforms, tv.utils = datasets, transforms, utils
    sys.modules.update({"torchvision": tv, "torchvision.datasets": datasets,
                        "torchvision.transforms": transforms, "torchvision.utils": utils})

    mpl = types.ModuleType("matplotlib")
    plt = types.ModuleType("matplotlib.pyplot")
    for name in ("plot", "legend", "show", "figure", "xlabel", "ylabel", "title", "savefig",
                 "xticks", "yticks", "close"):
        setattr(plt, name, lambda *a, **k: None)
    mpl.pyplot = plt
    mpl.use = lambda *a, **k: None
    sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": plt})


def run_model(spec, torch):
    """Train the model a file defines as kuangliu/pytorch-cifar's main.py does (SGD lr 0.1,
    momentum 0.9, weight decay 5e-4, cosine schedule, cross entropy) on random CIFAR-shaped
    batches for a few steps, then one forward in eval mode."""
    namespace = runpy.run_path(os.path.join(PROGRAMS_DIR, spec["path"]), run_name="ported_model")
    net = eval(spec["build"], namespace)
    if spec.get("driver") == "super_resolution":
        return run_super_resolution(spec, torch, net)
    if spec.get("driver") == "word_language_model":
        return run_word_language_model(spec, torch, net)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
    net.train()
    for _ in range(spec["steps"]):
        inputs = torch.randn(spec["batch"], 3, 32, 32)
        targets = torch.randint(0, 10, (spec["batch"],))
        optimizer.zero_grad()
        loss = criterion(net(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
    net.eval()
    with torch.no_grad():
        criterion(net(torch.randn(spec["batch"], 3, 32, 32)), torch.randint(0, 10, (spec["batch"],)))
    return {"net": net}


def run_super_resolution(spec, torch, net):
    """Train as pytorch/examples super_resolution/main.py does (Adam lr 0.01, MSE loss) on
    random 1x8x8 inputs and 1x24x24 targets in [0, 1] for a few steps, then one test
    forward without gradients."""
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(spec["steps"]):
        inputs = torch.rand(spec["batch"], 1, 8, 8)
        targets = torch.rand(spec["batch"], 1, 24, 24)
        optimizer.zero_grad()
        loss = criterion(net(inputs), targets)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        criterion(net(torch.rand(spec["batch"], 1, 8, 8)), torch.rand(spec["batch"], 1, 24, 24))
    return {"net": net}


def run_word_language_model(spec, torch, model):
    """Train as pytorch/examples word_language_model/main.py does, without its optimizer
    flag: batchify, truncated BPTT with ``repackage_hidden`` (detach), NLL loss,
    ``clip_grad_norm_(0.25)`` and plain SGD by hand (``p.data.add_(p.grad, alpha=-lr)``,
    lr 20), on random token ids for ``steps`` batches of ``bptt`` 5; then its
    ``evaluate`` (eval mode, no gradients, batch 10) on two more batches."""
    ntokens, bsz, eval_bsz, bptt, lr, clip = WLM_NTOKENS, spec["batch"], 10, 5, 20.0, 0.25
    transformer = getattr(model, "model_type", None) == "Transformer"
    if transformer:   # nn.Transformer's own dropout (0.1, not the model's argument): off
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(getattr(m, "dropout", None), float):
                m.dropout = 0.0

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous()

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)

    def repackage_hidden(h):
        if isinstance(h, torch.Tensor):
            return h.detach()
        return tuple(repackage_hidden(v) for v in h)

    train_data = batchify(torch.randint(0, ntokens, (bsz * (bptt * spec["steps"] + 1),)), bsz)
    val_data = batchify(torch.randint(0, ntokens, (eval_bsz * (bptt * 2 + 1),)), eval_bsz)
    criterion = torch.nn.NLLLoss()

    model.train()
    if not transformer:
        hidden = model.init_hidden(bsz)
    for i in range(0, train_data.size(0) - 1, bptt):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        if transformer:
            output = model(data).view(-1, ntokens)
        else:
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)

    model.eval()
    if not transformer:
        hidden = model.init_hidden(eval_bsz)
    with torch.no_grad():
        for i in range(0, val_data.size(0) - 1, bptt):
            data, targets = get_batch(val_data, i)
            if transformer:
                output = model(data).view(-1, ntokens)
            else:
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
            criterion(output, targets)
    return {"model": model}


def generate_sine_wave(torch):
    """Run time_sequence_prediction's generate_sine_wave.py in the working directory, its
    ``torch.save`` of the 100 x 1000 array shrunk to the first SINE_WAVE_SHAPE."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        original(obj[:SINE_WAVE_SHAPE[0], :SINE_WAVE_SHAPE[1]], f, *args, **kwargs)
        f.flush()

    torch.save = save
    try:
        runpy.run_path(os.path.join(PROGRAMS_DIR, "examples_time_sequence_prediction",
                                    "generate_sine_wave.py"), run_name="__main__")
    finally:
        torch.save = original


def prepare_sine_wave(torch):
    """traindata.pt as time_sequence_prediction expects it: written by PyTorch's torch.save
    whenever PyTorch is installed (so that under distgrad the program loads a file PyTorch
    wrote), else by distgrad's."""
    if BACKEND == "torch" or not HAVE_REAL_TORCH:
        generate_sine_wave(torch)
    else:
        subprocess.run([sys.executable, os.path.abspath(__file__), "sine-wave"], check=True)


def run_one(name, torch, outdir):
    global RNG, MNIST_SIZES, FAKEDATA_SIZE
    spec = PROGRAMS[name]
    RNG = np.random.RandomState(0)
    MNIST_SIZES = spec.get("mnist", (0, 0))
    FAKEDATA_SIZE = spec.get("fakedata", 0)
    LOSSES.clear()
    torch.set_default_dtype(getattr(torch, spec["dtype"]))
    workdir = os.path.join(outdir, name)
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    if spec["kind"] == "script":
        path = os.path.join(PROGRAMS_DIR, spec["path"])
        sys.argv = [path] + spec.get("argv", [])
        if spec.get("prepare") == "sine_wave":
            prepare_sine_wave(torch)
            with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
                namespace = runpy.run_path(path, run_name="__main__")
        else:
            namespace = runpy.run_path(path, run_name="__main__")
    else:
        namespace = run_model(spec, torch)

    arrays = {"losses": np.array([v for _, v in LOSSES], dtype=np.float64),
              "loss_names": np.array([n for n, _ in LOSSES], dtype=str)}
    for var, value in namespace.items():
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                arrays[f"{var}.{key}"] = np.asarray(tensor.detach().numpy())
    np.savez(os.path.join(outdir, name + ".npz"), **arrays)


def main():
    global BACKEND, HAVE_REAL_TORCH
    if sys.argv[1:] == ["sine-wave"]:   # in the working directory, under PyTorch
        import torch
        generate_sine_wave(torch)
        return
    backend, outdir, names = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
    BACKEND = backend
    HAVE_REAL_TORCH = importlib.util.find_spec("torch") is not None   # before the shim
    sys.path.insert(0, HERE)
    if backend == "distgrad":
        import torch_shim
        torch_shim.install()
    elif backend != "torch":
        raise SystemExit(f"unknown backend {backend!r}")
    import torch
    import torch.nn.functional  # noqa: F401
    import torch.utils.data  # noqa: F401
    if backend == "torch":
        torch.set_num_threads(1)
    patch_random(torch)
    patch_init(torch)
    patch_init_functions(torch)
    patch_orthogonal(torch)
    patch_losses(torch)
    install_stand_ins(torch)
    for name in names:
        run_one(name, torch, outdir)


if __name__ == "__main__":
    main()
