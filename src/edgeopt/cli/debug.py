"""``edgeopt debug``: op-by-op error between a model in PyTorch and its exported artifact (interop.debug)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import STDOUT_FD, JsonOpt, ModelArg, app, emit, quiet


@app.command()
def debug(
    model: ModelArg,
    artifact: Annotated[Path, typer.Argument(help="the exported .tflite, .onnx or .pte")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help=".npy input in the model's own interface (default: an example)")
    ] = None,
    tol: Annotated[float | None, typer.Option("--tol", help="relative error counted as diverged")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare MODEL's intermediate tensors in PyTorch with ARTIFACT's inside its runtime, op by op.

    Names the first op whose relative error exceeds --tol (1e-3 for float models, 0.05 for int8).
    """
    quiet(as_json)

    from edgeopt.interop.debug import debug_artifact
    from edgeopt.model import load_model
    from edgeopt.runtimes.resolve import load_inputs

    edge = load_model(model)
    x = None
    if inputs is not None:
        x = load_inputs(inputs)
        x = x[None] if x.ndim == len(edge.meta.input.shape) else x
    report = debug_artifact(edge, artifact, x, tol)
    if as_json:
        emit(report.to_json(), True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.artifact} ({report.runtime}) against PyTorch")
    for col in ("#", "op (PyTorch)", "runtime tensor", "max |Δ|", "relative"):
        table.add_column(col)
    for r in report.rows:
        style = "bold red" if r.op == report.first_divergent else ("red" if r.diverged else None)
        rel = "-" if r.rel_diff is None else f"{r.rel_diff:.3g}"
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
        table.add_row(str(r.index), r.op, (r.runtime_tensor or "-")[:48], diff, rel, style=style)
    with os.fdopen(os.dup(STDOUT_FD[-1]), "w") if STDOUT_FD else sys.stdout as out:
        console = Console(file=out)
        if report.rows:
            console.print(table)
        console.print(report.note)
