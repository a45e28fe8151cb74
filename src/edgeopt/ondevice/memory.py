"""Training memory, three ways; each figure says what it counts and what it leaves out.

* **analytic** (:func:`analytic_memory`): one PyTorch forward-backward of the prepared module on the batch,
  counting the tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``; distinct
  storages, parameters excluded), the gradients and optimizer state of the trainable parameters, the
  trainable weights themselves, the batch (inputs and labels; one micro-batch under gradient accumulation)
  and, when micro-batches are accumulated, the host's gradient accumulator. Leaves out: frozen weights (constants,
  read-only), transient activations that are freed during the forward, the runtime's own workspace and
  allocator overhead. Stock autograd: it saves a conv's input even where only the bias trains.
* **planned** (:func:`planned_memory`): ExecuTorch's memory plan of the training program, the sum of the
  execution plan's non-constant buffers (read by :func:`edgeopt.runtimes.memory_plan.pte_memory_plan`):
  every activation, saved tensor and gradient the program holds, as laid out by ExecuTorch's planner.
  Leaves out: the weights (constant and mutable), XNNPACK's own workspace and packed weights, the
  program file itself.
* **measured** (:func:`measured_memory`): a fresh Python process imports the runtime (torch and ExecuTorch's
  runtime bindings, not its exporter), then reads the program into memory (once: the runtime loads it from
  that buffer without a copy) and trains ``steps`` steps (with micro-batches, their gradients summed on the
  host as the trainer does); the figure is its peak resident memory (VmHWM) minus its resident memory just
  before loading (freed heap pages are first handed back with ``malloc_trim``, so that reused heap shows as
  new pages; the high-water mark is reset there), minus the file-backed pages (the runtime libraries' code)
  first touched meanwhile: they are shared, read-only and not the program's. (Loaded from its file, the .pte
  was mapped and its pages were subtracted with the code: 131 KB less for a 133 KB program, 2026-12-02.)
  Counts everything the process touched for the program: the program data, planned buffers, delegate
  workspaces and packed weights, the optimizer, thread pools, allocator slack. Leaves out: the interpreter
  and libraries (the baseline). With the frozen part in XNNPACK, most of a head-only figure is XNNPACK's own
  memory for the frozen forward (its activations and packed weights, outside ExecuTorch's plan): ResNet-8's
  head at batch 8 measured 2.39 MB with a 106 KB plan, 1.68 MB with the frozen part in portable kernels
  (its activations then in the plan: 1.58 MB), and a 30k-parameter linear program 0.55 MB (figures taken
  with the mapped .pte, before the change above).
  This is the figure a memory budget is checked against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeopt.errors import EdgeoptError

ANALYTIC_COUNTS = ("saved tensors of autograd (distinct storages, parameters excluded) + gradients + optimizer "
                   "state + trainable weights + batch; leaves out frozen weights, transient activations, runtime "
                   "workspace")  # fmt: skip
PLANNED_COUNTS = ("ExecuTorch's planned non-constant buffers of the training method (activations, saved tensors, "
                  "gradients); leaves out weights, XNNPACK workspace and packed weights, the program file")  # fmt: skip
MEASURED_COUNTS = ("VmHWM of a fresh process that reads the program into memory once, loads it and trains, minus "
                   "its resident memory before loading and minus library code pages first touched meanwhile "
                   "(interpreter and runtime libraries excluded; the program's bytes included)")  # fmt: skip


@dataclass
class MemoryFigures:
    """The three figures (bytes; ``None`` where not taken) and the analytic breakdown."""

    analytic_bytes: int | None = None
    planned_bytes: int | None = None
    measured_bytes: int | None = None
    analytic_parts: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The three figures plus what each counts (``counts``) and the analytic breakdown."""
        out: dict[str, Any] = asdict(self)
        out["counts"] = {"analytic": ANALYTIC_COUNTS, "planned": PLANNED_COUNTS, "measured": MEASURED_COUNTS}
        return out


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def analytic_memory(
    work: nn.Module, x: torch.Tensor, y: torch.Tensor, momentum: float = 0.0, accumulate: int = 1
) -> dict[str, int]:
    """The analytic training-memory breakdown (module doc) of ``work`` on one batch; ``total`` sums it.

    ``x``/``y`` are what one program call sees (a micro-batch under gradient accumulation); ``accumulate`` > 1
    adds the host's gradient accumulator (one more gradient-sized buffer).

    Cost: one PyTorch forward and backward.
    """
    params = {_storage_key(p) for p in work.parameters()}
    trainable = [p for p in work.parameters() if p.requires_grad]
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in params:
            saved[key] = t.untyped_storage().nbytes()
        return t

    work.eval()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(work(x), y)
    if loss.requires_grad:
        loss.backward()
    for p in trainable:
        p.grad = None
    weights = sum(p.numel() * p.element_size() for p in trainable)
    parts = {
        "saved_tensors": int(sum(saved.values())),
        "gradients": int(weights),
        "gradient_accumulator": int(weights if accumulate > 1 else 0),
        "optimizer_state": int(weights if momentum else 0),
        "trainable_weights": int(weights),
        "batch": int(x.numel() * x.element_size() + y.numel() * y.element_size()),
    }
    parts["total"] = sum(parts.values())
    return parts


def planned_memory(buffer: bytes) -> int:
    """ExecuTorch's planned non-constant buffer bytes of a training program (module doc). Cost: parsing it."""
    from edgeopt.runtimes.memory_plan import pte_memory_plan

    return int(pte_memory_plan(buffer, "the training program").arena_bytes)


_MEASURE_SCRIPT = r"""
import json, os, sys
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None
path, shape, classes = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
steps, lr, threads, accumulate = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
import types
import torch
torch.set_num_threads(threads)
import executorch
# the runtime only: a placeholder for the exporter package (executorch.exir), whose __init__ pulls in the
# whole compiler stack (about 10 s of imports) while the runtime bindings need only its _warnings module
exir = types.ModuleType("executorch.exir")
exir.__path__ = [os.path.join(executorch.__path__[0], "exir")]
sys.modules.setdefault("executorch.exir", exir)
from executorch.extension.training import _load_for_executorch_for_training_from_buffer, get_sgd_optimizer
g = torch.Generator().manual_seed(0)
batches = [(torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)) for _ in range(2)]
import ctypes, gc
gc.collect()
try:  # hand freed heap pages back to the kernel, so that the program's allocations show as new pages
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method = "vmhwm"
except OSError:
    method = "vmhwm-unreset"
base, base_file = status("VmRSS"), status("RssFile")
with open(path, "rb") as f:  # the program in anonymous memory, once: a mapped .pte would count as file pages
    program = f.read()
m = _load_for_executorch_for_training_from_buffer(program)
opt = None
for i in range(steps):
    acc = None
    for j in range(accumulate):  # micro-batches: their gradients summed on the host, as the trainer does
        out = m.forward_backward("forward", batches[(i * accumulate + j) % 2])
        grads = m.named_gradients()
        if acc is None:
            acc = grads
        else:
            for k, g in grads.items():
                acc[k].add_(g)
    if opt is None:
        opt = get_sgd_optimizer(m.named_parameters(), lr, 0, 0, 0, False)
    opt.step(acc)
peak, end_file = status("VmHWM"), status("RssFile")
print("EDGEOPT_MEMORY " + json.dumps({"baseline": base, "peak": peak, "method": method, "loss": float(out[0]),
                                      "code_pages": max(0, end_file - base_file)}))
"""


def measured_memory(
    buffer: bytes, batch_shape: tuple[int, ...], num_classes: int, steps: int = 3, lr: float = 0.01, threads: int = 1,
    accumulate: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Run the program in a fresh process (module doc): ``bytes`` (the figure), ``rise_bytes`` (VmHWM rise with
    code pages), ``code_pages``, ``baseline``, ``peak``, ``method``.

    ``batch_shape`` is the program's static batch; ``accumulate`` micro-batches of it make one optimizer step,
    their gradients summed on the host as :class:`edgeopt.ondevice.loops.ExecuTorchTrainer` does.

    Needs Linux's ``/proc`` (VmHWM). Cost: one Python start with torch and ExecuTorch (2-4 s) plus ``steps`` steps.
    """
    if not Path("/proc/self/status").exists():
        raise EdgeoptError("measured training memory needs Linux /proc (VmHWM)", "use the analytic or planned figure")
    with tempfile.TemporaryDirectory() as tmp:
        pte = Path(tmp) / "train.pte"
        pte.write_bytes(buffer)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE_SCRIPT, str(pte), json.dumps(list(batch_shape)), str(num_classes),
             str(steps), str(lr), str(threads), str(max(1, accumulate))],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EDGEOPT_MEMORY ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise EdgeoptError(f"the memory measurement process failed ({tail})", "rerun with --debug")
    rec = json.loads(line.split(" ", 1)[1])
    rec["rise_bytes"] = max(0, int(rec["peak"]) - int(rec["baseline"]))
    rec["bytes"] = max(0, rec["rise_bytes"] - int(rec["code_pages"]))
    return rec
