"""Command line: parse flags, call the Python API, print a rich table or one JSON object.

Every command is a thin call into ``edgeopt``'s API. Errors a user can cause print one
line and exit 2 (``--debug`` shows the traceback); Ctrl-C exits 130 and leaves nothing
half-written (every writer in edgeopt is atomic).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeopt.errors import EdgeoptError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Make neural networks fit mobile and edge devices.")

# Library chatter (exporters, runtimes) goes to stderr; our own output goes to the real stdout.
_STDOUT_FD: int | None = None

ModelArg = Annotated[str, typer.Argument(help="model: zoo:NAME, .edgeopt, .pt2, .onnx or .tflite")]
DataOpt = Annotated[str, typer.Option("--data", help="dataset: digits, imagefolder:PATH, cifar10:DIR, mnist:DIR")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else")]
RuntimeOpt = Annotated[str, typer.Option("--runtime", help="torch, onnxruntime, executorch or litert")]
RangeOpt = Annotated[str | None, typer.Option("--input-range", help="value range the model expects, e.g. 0,255")]


def _emit(obj: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Print ``obj`` as JSON or as a two-column table, on the real stdout."""
    out = os.fdopen(os.dup(_STDOUT_FD), "w") if _STDOUT_FD is not None else sys.stdout
    with out:
        if as_json:
            out.write(json.dumps(obj, default=str) + "\n")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None, show_header=False)
        for k, v in obj.items():
            table.add_row(k, _fmt(v))
        Console(file=out).print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _quiet(as_json: bool) -> None:
    if as_json:
        os.environ["EDGEOPT_QUIET"] = "1"


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError as e:
        raise EdgeoptError(f"--input-range '{text}' is not LO,HI", "for example --input-range 0,255") from e
    if not lo < hi:
        raise EdgeoptError(f"--input-range '{text}' needs LO < HI")
    return lo, hi


def _model_for_data(source: str, data_spec: str, input_range: tuple[float, float] | None = None):
    """Load MODEL; a zoo model is sized to the data's image shape and class count."""
    from edgeopt.data import load_dataset
    from edgeopt.model import load_model

    train = load_dataset(data_spec, "train")
    if source.startswith("zoo:"):
        h, w, c = train.image_shape
        return load_model(source, input_shape=(c, h, w), num_classes=train.num_classes), train
    return load_model(source, input_range=input_range), train


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    """edgeopt: compress, export and measure models in ExecuTorch, LiteRT and ONNX Runtime."""


@app.command()
def train(
    model: ModelArg,
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="where to write the trained .edgeopt model")],
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    optimizer: Annotated[str, typer.Option(help="sgd or adam")] = "sgd",
    lr: Annotated[float | None, typer.Option(help="peak learning rate (default 0.05 sgd, 2e-3 adam)")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    seed: int = 0,
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train MODEL on the train split of DATA and save it."""
    _quiet(as_json)
    from edgeopt.data import load_dataset
    from edgeopt.model import save_model
    from edgeopt.train import FitConfig, evaluate, fit

    m, train_data = _model_for_data(model, data, _parse_range(input_range))
    cfg = FitConfig(epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed)
    m, history = fit(m, train_data, cfg)
    m = m.with_lineage({"pass": "train", "epochs": epochs, "data": data})
    test = evaluate(m, load_dataset(data, "test"))
    path = save_model(m, out)
    _emit(
        {
            "model": str(path),
            "test_accuracy": test.accuracy,
            "samples": test.samples,
            "train_loss": history.epochs[-1]["loss"],
            "seconds": round(history.seconds, 2),
        },
        as_json,
        "train",
    )


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help=".tflite or .onnx file")],
    out: Annotated[Path, typer.Option("--out", help="where to write the .edgeopt model")],
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a .tflite or .onnx model into a trainable PyTorch model."""
    _quiet(as_json)
    from edgeopt.model import load_model, save_model

    if file.suffix.lower() not in (".tflite", ".onnx"):
        raise EdgeoptError(f"cannot import '{file.suffix or file.name}' files", "give a .tflite or .onnx file")
    m = load_model(file, input_range=_parse_range(input_range))
    path = save_model(m, out)
    spec = m.meta.input
    _emit(
        {
            "model": str(path),
            "input_shape": list(spec.shape),
            "layout": spec.layout,
            "input_range": list(spec.value_range),
            "num_classes": m.meta.num_classes,
        },
        as_json,
        "import",
    )


@app.command("eval")
def eval_(
    model: ModelArg,
    data: DataOpt,
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="evaluate the first N samples")] = None,
    runtime: RuntimeOpt = "torch",
    threads: Annotated[int, typer.Option(min=1)] = 1,
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-1 accuracy of MODEL on DATA, measured inside RUNTIME."""
    _quiet(as_json)
    from edgeopt.data import load_dataset
    from edgeopt.runtimes.resolve import open_model

    opened = open_model(model, runtime, threads=threads, input_range=_parse_range(input_range))
    from edgeopt.train import evaluate

    result = evaluate(opened.meta, load_dataset(data, split), predict=opened.runner.run, limit=limit)
    _emit({**result.to_json(), "runtime": opened.runtime}, as_json, "eval")


@app.command()
def run(
    model: ModelArg,
    inputs: Annotated[Path, typer.Option("--inputs", help=".npy batch in the model's own input interface")],
    out: Annotated[Path, typer.Option("--out", help="where to write the raw outputs (.npy)")],
    runtime: RuntimeOpt = "torch",
    threads: Annotated[int, typer.Option(min=1)] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Run MODEL on raw inputs and write its raw outputs."""
    _quiet(as_json)
    from edgeopt.runtimes.resolve import open_model, run_raw

    opened = open_model(model, runtime, threads=threads)
    y = run_raw(opened, inputs, out)
    _emit({"out": str(out), "output_shape": list(y.shape), "runtime": opened.runtime}, as_json, "run")


@app.command()
def export(
    model: ModelArg,
    format: Annotated[str, typer.Option("--format", help="onnx, pte or tflite")],
    out: Annotated[Path, typer.Option("--out", help="artifact path")],
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to a runtime artifact and check parity with PyTorch inside that runtime."""
    _quiet(as_json)
    from edgeopt.interop.export import export_model
    from edgeopt.model import load_model

    result = export_model(load_model(model, input_range=_parse_range(input_range)), format, out)
    _emit(
        {
            "artifact": str(result.path),
            "format": result.format,
            "runtime": result.runtime,
            "size_bytes": result.size_bytes,
            "parity": result.parity.to_json(),
        },
        as_json,
        "export",
    )


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="model or artifact (.onnx, .pte, .tflite, .edgeopt, .pt2, zoo:NAME)")],
    runtime: Annotated[str | None, typer.Option(help="default: the artifact's own runtime, torch for models")] = None,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    runs: Annotated[int, typer.Option(min=5)] = 200,
    warmup: Annotated[int, typer.Option(min=0)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Batch-1 latency (p50/p90) and peak memory of MODEL inside a runtime."""
    _quiet(as_json)
    from edgeopt.runtimes import benchmark
    from edgeopt.runtimes.resolve import resolve_source

    name, target = resolve_source(model, runtime)
    s = benchmark(name, target, threads=threads, warmup=warmup, runs=runs)
    _emit(
        {
            "latency_ms_p50": s.p50_ms,
            "latency_ms_p90": s.p90_ms,
            "latency_ms_mean": s.mean_ms,
            "runs": s.runs,
            "threads": s.threads,
            "runtime": name,
            "peak_memory_bytes": s.peak_memory_bytes,
        },
        as_json,
        "bench",
    )


@app.command()
def profile(model: ModelArg, as_json: JsonOpt = False) -> None:
    """Parameters, MACs, size and peak activation memory of MODEL."""
    _quiet(as_json)
    from edgeopt.model import load_model
    from edgeopt.profile import profile_model

    _emit(profile_model(load_model(model)).to_json(), as_json, "profile")


@app.command()
def recipe(
    file: Annotated[Path, typer.Argument(help="recipe YAML")],
    out: Annotated[Path, typer.Option("--out", help="run directory")],
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a recipe (a list of passes) in a resumable run directory and write the report."""
    _quiet(as_json)
    from edgeopt.pipeline import load_recipe
    from edgeopt.pipeline.demo import run_and_report

    _emit(run_and_report(load_recipe(file), out, resume=resume, verbose=not as_json), as_json, "recipe")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/demo"),
    as_json: JsonOpt = False,
) -> None:
    """The main job on built-in data: train on digits, export to all three runtimes, measure, report."""
    _quiet(as_json)
    from edgeopt.pipeline.demo import DEMO_RECIPE, run_and_report
    from edgeopt.pipeline.recipe import recipe_from_dict

    _emit(run_and_report(recipe_from_dict(DEMO_RECIPE), out, resume=True, verbose=not as_json), as_json, "demo")


@app.command()
def zoo(as_json: JsonOpt = False) -> None:
    """List the models in the zoo."""
    from edgeopt.models import list_models

    _emit({e.name: e.description for e in list_models()}, as_json, "zoo")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per user error, tracebacks only with --debug."""
    global _STDOUT_FD
    import click

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("EDGEOPT_DEBUG") == "1"
    args = (["--debug"] if "--debug" in args else []) + [a for a in args if a != "--debug"]
    sys.stdout.flush()
    _STDOUT_FD = os.dup(1)
    os.dup2(2, 1)  # anything a library prints lands on stderr
    try:
        rv = app(args=args, prog_name="edgeopt", standalone_mode=False)
        if rv == 130:  # typer turns KeyboardInterrupt into an exit code in non-standalone mode
            raise KeyboardInterrupt
        return rv if isinstance(rv, int) else 0
    except EdgeoptError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        return 130
    except click.exceptions.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
        os.dup2(_STDOUT_FD, 1)
        os.close(_STDOUT_FD)
        _STDOUT_FD = None


if __name__ == "__main__":
    raise SystemExit(main())


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
