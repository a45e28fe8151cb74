"""The typer app and what every command shares: option types, output, argument parsing.

Command modules (``commands.py`` for the foundation, one module per technique) register
themselves on ``app``; ``edgeopt.cli.main`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, TypeVar

import typer

from edgeopt.errors import EdgeoptError

T = TypeVar("T")
# "markdown": help paragraphs reflow to the terminal (Typer's default keeps the docstrings' line breaks)
HELP_MARKUP = "markdown"
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=HELP_MARKUP,
                  help="Make neural networks fit mobile and edge devices.")  # fmt: skip

# Library chatter (exporters, runtimes) goes to stderr; our own output goes to the real stdout.
STDOUT_FD: list[int] = []  # the real stdout, saved by main(); fd 1 points at stderr meanwhile

ModelArg = Annotated[str, typer.Argument(help="model: zoo:NAME, .edgeopt, .pt2, .onnx or .tflite")]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="dataset: digits, imagefolder:PATH, cifar10:DIR, mnist:DIR, npz:PATH, csv:PATH, mnist1d:, anomaly:,"
        " digits-multi",
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="classification, regression or anomaly (default: the model's, or the data's)"),
]
LabelOpt = Annotated[str | None, typer.Option("--label", help="the label column of csv: data")]
DeviceOpt = Annotated[str, typer.Option("--device", help="training device: cpu, cuda or auto (cuda when present)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else")]
RuntimeOpt = Annotated[
    str | None,
    typer.Option(
        "--runtime", help="torch, onnxruntime, executorch or litert (default: the artifact's own, torch for models)"
    ),
]
RangeOpt = Annotated[str | None, typer.Option("--input-range", help="value range the model expects, e.g. 0,255")]
LayoutOpt = Annotated[
    str | None, typer.Option("--layout", help="a bare artifact's input layout, NCHW or NHWC (default: what it states)")
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", help="the model's classes: a count (10) or names (cat,dog,...)")
]
# Two thread pools, two names: --threads is always a deployment runtime's threads (running, timing the
# model, as `bench` reports them); --train-threads is always torch's threads while training or calibrating.
TrainThreadsOpt = Annotated[
    int | None, typer.Option("--train-threads", min=1, help="torch threads while training (default: torch's)")
]
OldThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, hidden=True, help="deprecated here: --train-threads")
]


def renamed(new: str, new_value: T | None, old: str, old_value: T | None, why: str = "") -> T | None:
    """The value of an option that has a deprecated second name; the old name still works, with a warning."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise EdgeoptError(f"{old} is the old name of {new}", f"give only {new}")
    print(f"warning: {old} is deprecated{why}; use {new}", file=sys.stderr)
    return old_value


def torch_threads(new_value: int | None, old_value: int | None) -> int | None:
    """``--train-threads``, or the deprecated ``--threads`` a training command took for torch's threads."""
    why = " for torch's threads (--threads is a runtime's)"
    return renamed("--train-threads", new_value, "--threads", old_value, why)


def emit(obj: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Print ``obj`` as JSON or as a two-column table, on the real stdout."""
    out = os.fdopen(os.dup(STDOUT_FD[-1]), "w") if STDOUT_FD else sys.stdout
    with out:
        if as_json:
            out.write(json.dumps(obj, default=str) + "\n")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None, show_header=False)
        for k, v in obj.items():
            table.add_row(k, fmt(v))
        Console(file=out).print(table)


def warn(obj: dict[str, Any]) -> None:
    """Repeat an output's ``note`` and ``warning`` on stderr (they stay in the output as fields)."""
    for key in ("note", "warning"):
        if obj.get(key):
            print(f"{key}: {obj[key]}", file=sys.stderr)


EVAL_ADVICE = "`edgeopt eval` on the model names the likely cause (input range, layout, classes)"


def warn_at_chance(
    out: dict[str, Any],
    num_classes: Any,
    *,
    majority: float | None = None,
    advice: str = EVAL_ADVICE,
    **accuracies: float | None,
) -> None:
    """Add a ``warning`` to ``out`` (and stderr) for each named accuracy at or below chance.

    ``num_classes`` is a class count, or a model's metadata: for a regression or anomaly model the
    "accuracy" fields hold the task's score, so ``out`` says which (``task``, ``score_metric``) and no
    chance warning applies. ``majority`` is the most common label's share where known (chance is then
    the higher of it and 1/classes); ``advice`` ends the warning.
    """
    from edgeopt.train.diagnose import chance_note

    task = getattr(num_classes, "task", "classification")
    if task != "classification":
        from edgeopt.train.tasks import SCORE_NAMES

        out.update(task=task, score_metric=SCORE_NAMES[task])
        return
    num_classes = getattr(num_classes, "num_classes", num_classes)

    for key, acc in accuracies.items():
        note = None if acc is None else chance_note(acc, num_classes, majority)
        if note is not None:
            text = f"{key}: {note}; {advice}"
            out["warning"] = f"{out['warning']}; {text}" if out.get("warning") else text
            print(f"warning: {text}", file=sys.stderr)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def quiet(as_json: bool) -> None:
    if as_json:
        os.environ["EDGEOPT_QUIET"] = "1"


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``--input-shape 640`` / ``1,40`` / ``3,32,32`` (no batch dimension) as a tuple."""
    if text is None:
        return None
    try:
        shape = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError as e:
        raise EdgeoptError(f"--input-shape '{text}' is not a list of sizes", "for example --input-shape 1,40") from e
    if not shape or any(s < 1 for s in shape):
        raise EdgeoptError(f"--input-shape '{text}' needs sizes of at least 1", "for example --input-shape 640")
    return shape


def parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError as e:
        raise EdgeoptError(f"--input-range '{text}' is not LO,HI", "for example --input-range 0,255") from e
    if not lo < hi:
        raise EdgeoptError(f"--input-range '{text}' needs LO < HI")
    return lo, hi


def model_for_data(
    source: str,
    data_spec: str,
    input_range: tuple[float, float] | None = None,
    seed: int | None = None,
    task: str | None = None,
    label: str | None = None,
):
    """Load MODEL and the train split; a zoo model is sized to the data's sample shape and outputs.

    ``seed`` fixes a zoo model's init; ``task`` picks what a zoo model is for (default: the zoo
    entry's, or regression for data with real-valued targets) and must match a loaded model's
    task; ``label`` is a ``csv:`` file's label column.
    """
    from edgeopt.data import load_dataset
    from edgeopt.model import load_model

    train = load_dataset(data_spec, "train", label=label)
    if source.startswith("zoo:"):
        from edgeopt.data.dataset import refuse_multi_input_data
        from edgeopt.models.registry import get_entry

        refuse_multi_input_data(train, f"a zoo model ({source})")

        entry = get_entry(source[4:])
        if train.task == "multi":  # one output per label array (edgeopt.models.heads)
            from edgeopt.models import create_model

            if task not in (None, "multi"):
                raise EdgeoptError(f"the data has one label array per output ({', '.join(train.class_names)})"
                                   f"; --task {task} does not fit it", "drop --task")  # fmt: skip
            model = create_model(source[4:], input_shape=train.sample_shape, seed=seed, outputs=train.outputs)
        elif task is None:
            task = "regression" if train.task == "regression" and not entry.reconstructs else entry.default_task
        if train.task != "multi":
            train = train.for_task(task)
            model = load_model(source, input_shape=train.sample_shape, num_classes=train.num_outputs, seed=seed,
                               task=task)  # fmt: skip
        if not train.is_image:  # arrays pass as they are: the record states the range they span
            lo, hi = train.value_range()
            model.meta.input.value_range = (lo, hi if hi > lo else lo + 1.0)
        return model, train
    from edgeopt.train.tasks import article

    model = load_model(source, input_range=input_range)
    if task is not None and task != model.meta.task:
        raise EdgeoptError(
            f"{source} is {article(model.meta.task)} {model.meta.task} model; --task {task} does not fit it",
            f"drop --task, or give --task {model.meta.task}",
        )
    return model, train.for_task(model.meta.task)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    """edgeopt: compress, export and measure models in ExecuTorch, LiteRT and ONNX Runtime."""
