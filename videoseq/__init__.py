"""videoseq: classify videos as sequences of frames.

    import videoseq
    model = videoseq.load("runs/mine")                 # a run folder (its best head) or a model bundle
    print(model.predict("clip.mp4").label)

The public names (`load`, `compare`, `scan`, `load_config`, and the types they return) load on first
use (PEP 562 module `__getattr__`): `import videoseq` itself imports neither torch, OpenCV nor numpy.
They live in `videoseq.api` (the interface layer), and are looked up here by name.
"""
import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {        # name -> the module that defines it
    "load": "videoseq.api",
    "compare": "videoseq.api",
    "scan": "videoseq.api",
    "load_config": "videoseq.api",
    "Model": "videoseq.api",
    "Comparison": "videoseq.api",
    "Prediction": "videoseq.infer.predict",
    "FailedInput": "videoseq.infer.predict",
    "Config": "videoseq.config",
    "DatasetIndex": "videoseq.data.dataset",
    "VideoseqError": "videoseq.errors",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> _typing.Any:
    """The public name `name`, imported from its module on first use (then cached here)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'videoseq' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, imported yet or not, and the subpackages already imported (for completion)."""
    return sorted({*__all__, "__version__", *(n for n in globals() if not n.startswith("_"))})
