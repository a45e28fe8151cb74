"""LiteRT (TFLite) runner through ``ai_edge_litert``'s interpreter with ``num_threads=threads``.

Float models take the float input as is. Integer-input models (full-integer quantized) get their
input quantized with the input tensor's scale and zero point (``q = round(x / s) + z``, clipped),
and integer outputs are dequantized (``(q - z) * s``): the caller always speaks float in the
model's own interface. A model whose batch dimension is dynamic (``shape_signature`` -1) is
resized to the batch it is given; otherwise batches run one fixed-size chunk at a time.

Cost: the first use imports the LiteRT interpreter (~0.3 s); building the interpreter and its
XNNPACK delegate takes milliseconds for edge models.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import ModelMeta, split_inputs
from edgeopt.runtimes.base import Runner, quiet_output


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Affine quantization of float ``x`` to integer ``dtype``, clipped. Pure.

    Rounds half away from zero, as TFLite's own QUANTIZE kernel does (``std::round``).
    """
    info = np.iinfo(dtype)
    v = x / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Inverse of ``quantize``: ``(q - zero_point) * scale`` as float32. Pure."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def graph_interpreter(path: str | Path) -> Any:
    """A LiteRT interpreter over a ``.tflite``'s own operators, for reading its graph (tensor and op
    details), not for timing: the default XNNPACK delegate, which would fold them into DELEGATE
    nodes, is not applied. Raises what the interpreter raises on a file it cannot read."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with quiet_output():
        return Interpreter(
            model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )


class LiteRTRunner(Runner):
    """Runs a ``.tflite`` model (float or integer interface; several inputs: float, a structured batch);
    returns every output (a tuple when there are several). Inputs and outputs follow the model's signature
    (litert-torch names them ``args_0``, ... and ``output_0``, ... in PyTorch's order)."""

    name = "litert"

    def __init__(self, path: str | Path, threads: int = 1, meta: ModelMeta | None = None) -> None:
        self._set_artifact(path, threads, meta)
        with quiet_output() as log:
            try:
                from ai_edge_litert.interpreter import Interpreter

                self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
                self.interpreter.allocate_tensors()
            except Exception as e:  # the interpreter raises ValueError/RuntimeError for bad files
                raise EdgeoptError(
                    f"LiteRT cannot load {self.path}: {str(e).strip() or log.tail(1)}", "re-export the model"
                ) from e
        ins = self._ordered("inputs", self.interpreter.get_input_details())
        if len(ins) > 1 and any(np.dtype(i["dtype"]).kind != "f" for i in ins):
            raise EdgeoptError(f"{self.path} takes {len(ins)} inputs, not all float",
                               "edgeopt runs float multi-input models")  # fmt: skip
        inp, outs = ins[0], self._ordered("outputs", self.interpreter.get_output_details())
        out = outs[0]
        self._in_index, self._out_index = int(inp["index"]), int(out["index"])
        self._out_indices = [int(o["index"]) for o in outs]
        self.output_names = tuple(str(o["name"]) for o in outs)
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.input_quant = self._quant_params(inp, "input")
        self.output_quant = self._quant_params(out, "output")
        self._output_quants = [self._quant_params(o, "output") for o in outs]
        if self.input_dtype.kind != "f" and self.input_quant is None:
            raise EdgeoptError(f"{self.path} takes {self.input_dtype} input without quantization parameters")
        shape = [int(s) for s in inp["shape"]]
        signature = [int(s) for s in inp.get("shape_signature", shape)]
        self._batch = shape[0]
        self.fixed_batch = None if signature[0] == -1 else shape[0]
        self.input_shape = tuple(shape[1:])
        self._in_indices = [int(i["index"]) for i in ins]
        self.input_shapes = tuple(tuple(int(d) for d in i["shape"][1:]) for i in ins) if len(ins) > 1 else ()

    def _ordered(self, kind: str, details: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Input or output (``kind``) tensors' details, in the signature's order when there are several
        (litert-torch names them ``args_0``, ``args_1``, ... and ``output_0``, ... in PyTorch's order)."""
        if len(details) < 2:
            return details
        try:
            signatures = self.interpreter._get_full_signature_list()
        except AttributeError:
            return details
        if len(signatures) != 1:
            return details
        named = next(iter(signatures.values())).get(kind, {})
        by_index = {int(d["index"]): d for d in details}
        if sorted(int(i) for i in named.values()) != sorted(by_index):
            return details

        def natural(name: str) -> tuple[Any, ...]:
            return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))

        return [by_index[int(named[k])] for k in sorted(named, key=natural)]

    def _quant_params(self, detail: dict[str, Any], which: str) -> tuple[float, int] | None:
        if np.dtype(detail["dtype"]).kind not in "iu":
            return None
        qp = detail.get("quantization_parameters", {})
        scales = np.asarray(qp.get("scales", []))
        if scales.size > 1:
            raise EdgeoptError(f"{self.path}: per-channel quantized {which} tensors are not supported")
        scale, zp = detail["quantization"]
        return (float(scale), int(zp)) if scale else None

    @contextlib.contextmanager
    def _active(self, batch: int) -> Iterator[None]:
        if self.fixed_batch is None and batch != self._batch:
            for index, shape in zip(self._in_indices, self.input_shapes or (self.input_shape,), strict=True):
                self.interpreter.resize_tensor_input(index, [batch, *shape])
            self.interpreter.allocate_tensors()
            self._batch = batch
        yield

    def _to_runtime(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if self.input_shapes:  # several float inputs (see __init__)
            return split_inputs(x)
        if self.input_quant is None:
            return x.astype(self.input_dtype, copy=False)
        return quantize(x, *self.input_quant, self.input_dtype)

    def _execute(self, xr: np.ndarray | list[np.ndarray]) -> np.ndarray:
        it = self.interpreter
        for index, a in zip(self._in_indices, xr if isinstance(xr, list) else [xr], strict=True):
            it.set_tensor(index, a)
        it.invoke()
        if len(self._out_indices) > 1:
            return tuple(it.get_tensor(i) for i in self._out_indices)
        return it.get_tensor(self._out_index)

    def _from_runtime(self, y: np.ndarray, quant: tuple[float, int] | None | str = "first") -> np.ndarray:
        quant = self.output_quant if quant == "first" else quant
        if quant is not None:
            return dequantize(y, *quant)  # type: ignore[misc]
        return np.asarray(y, dtype=np.float32)

    def _outputs_from_runtime(self, y: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        if isinstance(y, tuple):  # each output with its own quantization parameters
            return tuple(self._from_runtime(t, q) for t, q in zip(y, self._output_quants, strict=True))
        return self._from_runtime(y)

    def close(self) -> None:
        self.interpreter = None
        super().close()
