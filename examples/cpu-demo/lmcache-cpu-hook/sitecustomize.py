"""CPU demo only: let LMCache run its bookkeeping on a machine without a GPU.

LMCache has no connector for a CPU device: its ``CreateGPUConnector`` raises
``No supported cpu connector found.`` and LMCache then runs degraded (every
lookup a miss, a 3-second lookup timeout per request).  The same module ships
``MockGPUConnector``, which LMCache's own tests use: it moves no KV bytes but
lets lookups, stores and retrieves happen and be logged as they would on a
GPU.  This start-up hook makes ``CreateGPUConnector`` return it **only when
there is no GPU** (LMCache releases with that factory: late 0.3, 0.4, 0.5); on
any other device the original runs.

It is loaded because ``examples/cpu-demo/kvwatch.toml`` puts this directory on
the server's ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up in
every process, vLLM's workers included).  Never put it on a GPU host.  The
demo also sets ``PYTHONHASHSEED=0``: LMCache hashes token chunks with Python's
``hash`` in the scheduler and in the worker processes, which must agree.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys


def _no_accelerator(module) -> bool:
    """LMCache 0.5 names its device itself; before, it asks vLLM, which has no LMCache device on a CPU."""
    kind = getattr(module, "torch_device_type", None)
    if kind is not None:
        return kind == "cpu"
    import torch

    xpu = getattr(torch, "xpu", None)
    return not torch.cuda.is_available() and not (xpu is not None and xpu.is_available())


def _patch_connector(module) -> None:
    original = getattr(module, "CreateGPUConnector", None)
    if original is None or not hasattr(module, "MockGPUConnector"):
        return  # an LMCache without the factory (0.3.9, say) builds its CUDA connector itself: nothing to swap

    def create_gpu_connector(config, metadata, engine, *more, **named):
        if _no_accelerator(module):
            return module.MockGPUConnector(kv_shape=metadata.kv_shape)
        return original(config, metadata, engine, *more, **named)

    module.CreateGPUConnector = create_gpu_connector


def _patch_device(module) -> None:
    """LMCache 0.3 and 0.4 ask vLLM for the device before they build a connector (to count the GPUs of
    the node): on a CPU, the CPU (one "device"), instead of ``Unsupported device platform``."""
    original = getattr(module, "get_vllm_torch_dev", None)
    if original is None:
        return

    def get_vllm_torch_dev():
        import torch

        if _no_accelerator(module):
            return torch.cpu, "cpu"
        return original()

    module.get_vllm_torch_dev = get_vllm_torch_dev


# Module -> what is done to it once it has run.
PATCHES = {"lmcache.v1.gpu_connector": _patch_connector, "lmcache.integration.vllm.utils": _patch_device}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds the modules of ``PATCHES`` the usual way and patches each once it has run."""

    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchAfterImport())


def _chain() -> None:
    """Run the sitecustomize this one shadows (Debian's), as Python would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    for directory in sys.path:
        candidate = os.path.join(directory or os.getcwd(), "sitecustomize.py")
        if os.path.abspath(directory or os.getcwd()) != here and os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as handle:
                code = compile(handle.read(), candidate, "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": candidate})
            return


_chain()
