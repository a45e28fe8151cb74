"""``edgeopt adapt``: fine-tune a model on local data inside a runtime, under a memory budget (edgeopt.ondevice)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import (
    DataOpt,
    JsonOpt,
    ModelArg,
    RangeOpt,
    app,
    emit,
    model_for_data,
    parse_range,
    quiet,
    warn_at_chance,
)


@app.command()
def adapt(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="where to write the adapted .edgeopt model")],
    data: DataOpt = "digits",
    scope: Annotated[
        str, typer.Option("--scope", help="what trains: all, head, bias, bn, lastk:K, lora:R or auto (needs a budget)")
    ] = "head",
    runtime: Annotated[str, typer.Option("--runtime", help="executorch, litert (head only) or torch")] = "executorch",
    memory_budget_kb: Annotated[
        float | None, typer.Option("--memory-budget-kb", help="training memory budget (KiB), checked as measured")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="training steps (default 100)")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", min=0.01, help="passes over the data instead")] = None,
    lr: Annotated[float, typer.Option("--lr", help="SGD learning rate")] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="examples per SGD step")] = 32,
    micro_batch_size: Annotated[
        int | None, typer.Option("--micro-batch-size", min=1, help="ExecuTorch: the program's static batch, a divisor "
                                 "of --batch-size; gradients accumulate to the batch (less memory, same updates)")
    ] = None,
    frozen: Annotated[
        str, typer.Option("--frozen", help="ExecuTorch frozen part: float or int8 (XNNPACK), or none")
    ] = "float",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[int, typer.Option("--threads", min=1, help="the runtime's threads (trains and measures)")] = 1,
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune MODEL on DATA's train split inside RUNTIME and save the adapted weights.

    The training loop runs in the runtime (ExecuTorch's training module and SGD, or a LiteRT train
    signature); accuracy before and after is taken on the test split. Memory is reported three ways
    (analytic, ExecuTorch's plan, measured in a fresh process); a budget is checked against the measured
    figure, and --scope auto picks the scope with the best expected gain that fits it. See docs/ondevice.md.
    """
    quiet(as_json)
    from edgeopt.data import load_dataset
    from edgeopt.model import save_model
    from edgeopt.ondevice import AdaptConfig
    from edgeopt.ondevice import adapt as run_adapt

    if steps is not None and epochs is not None:
        from edgeopt.errors import EdgeoptError

        raise EdgeoptError("give --steps or --epochs, not both")
    m, train = model_for_data(model, data, parse_range(input_range), seed=seed)
    cfg = AdaptConfig(scope=scope, runtime=runtime.strip().lower(), steps=steps, epochs=epochs, lr=lr,
                      batch_size=batch_size, frozen=frozen, memory_budget_kb=memory_budget_kb, seed=seed,
                      threads=threads, micro_batch_size=micro_batch_size)  # fmt: skip
    result = run_adapt(m, train, load_dataset(data, "test"), cfg)
    path = save_model(result.model, out)
    record = result.to_json()
    warn_at_chance(record, result.model.meta, accuracy_before=record["accuracy_before"],
                   accuracy_after=record["accuracy_after"])  # fmt: skip
    if as_json:
        emit(record, True)
        return
    memory = record.pop("memory")
    emit({**record, **{k: v for k, v in memory.items()}, "step_ms": round(result.step_ms, 3), "model": str(path)},
         False, "adapt")  # fmt: skip
