"""edgeopt: make neural networks fit mobile and edge devices.

The Python API is the product; the CLI is a thin layer over it::

    import edgeopt
    model = edgeopt.load_model("zoo:resnet8")
    data = edgeopt.load_dataset("digits")
"""

from edgeopt.cpu_guard import avoid_onednn_without_avx512
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta, load_model, save_model

avoid_onednn_without_avx512()  # a heap-corrupting oneDNN path on AVX2-only CPUs (see cpu_guard)

__all__ = [
    "EdgeModel", "EdgeoptError", "InputSpec", "ModelMeta", "load_model", "save_model", "load_dataset", "optimize",
]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import edgeopt` light
    if name == "load_dataset":
        from edgeopt.data import load_dataset

        return load_dataset
    if name == "optimize":
        import importlib

        return importlib.import_module("edgeopt.optimize")  # a callable package: edgeopt.optimize(model, ...)
    raise AttributeError(name)
