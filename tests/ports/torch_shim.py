"""Make ``import torch`` (and its submodules) import distgrad instead.

``install()`` puts a meta-path finder in front of ``sys.meta_path``: every module
named ``torch`` or ``torch.<rest>`` is answered with the distgrad module of the same
path (``distgrad.<rest>``), except for the few places where distgrad keeps a module
elsewhere (``ALIASES``). The distgrad module object itself is what the program gets,
so ``torch.nn.Linear is distgrad.nn.Linear``.

Real ``import torch`` binds some submodules eagerly (``torch.utils.data`` is
reachable as an attribute after a bare ``import torch``); ``install()`` imports the
aliased ones at once and binds them on their parent, as an import would.

Only ever install this in a child process that runs a ported program: never in the
pytest process, which may import the real PyTorch.
"""
import importlib
import importlib.abc
import importlib.util
import sys

# torch module path -> distgrad module path, where they differ
ALIASES = {
    "torch.utils.data": "distgrad.data",
    "torch.utils.data.dataset": "distgrad.data.dataset",
    "torch.utils.data.dataloader": "distgrad.data.dataloader",
    "torch.utils.data.sampler": "distgrad.data.sampler",
}

# submodules real PyTorch makes reachable right after ``import torch``
EAGER = ["torch.nn", "torch.nn.functional", "torch.nn.init", "torch.optim",
         "torch.optim.lr_scheduler", "torch.autograd", "torch.utils", "torch.utils.data",
         "torch.utils.checkpoint", "torch.cuda", "torch.backends"]


def target_name(name: str) -> str:
    if name in ALIASES:
        return ALIASES[name]
    return "distgrad" + name[len("torch"):]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # already executed under its distgrad name; the import system has just set
        # ``__spec__`` to the torch-named spec: give the module its own back
        module.__spec__ = self.own_spec


class TorchToDistgrad(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch" and not fullname.startswith("torch."):
            return None
        dest = target_name(fullname)
        try:
            found = importlib.util.find_spec(dest)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None  # ModuleNotFoundError names the torch module the program asked for
        return importlib.util.spec_from_loader(fullname, _AliasLoader(dest),
                                               is_package=found.submodule_search_locations is not None)


def install():
    if any(isinstance(f, TorchToDistgrad) for f in sys.meta_path):
        return
    if "torch" in sys.modules and sys.modules["torch"].__name__ != "distgrad":
        raise RuntimeError("the real torch is already imported in this process")
    sys.meta_path.insert(0, TorchToDistgrad())
    for name in EAGER:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules[parent_name]
        if getattr(parent, child, None) is not module:
            setattr(parent, child, module)
