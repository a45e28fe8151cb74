"""``edgeopt hw calibrate|predict|transfer``: device profiles and cost prediction (edgeopt.hardware)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import HELP_MARKUP, JsonOpt, ModelArg, app, emit, quiet

hw = typer.Typer(no_args_is_help=True, rich_markup_mode=HELP_MARKUP,
                 help="Device profiles: calibrate a latency predictor, predict a model's cost.")  # fmt: skip
app.add_typer(hw, name="hw")

ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="threads the runtime uses")]


class _CalibrationBar:
    """Progress over the time budget (seconds, with ETA), naming how many models were measured."""

    def __init__(self, runtime: str, minutes: float) -> None:
        from edgeopt.progress import ProgressBar

        self.runtime = runtime
        self._bar = ProgressBar(f"calibrating {runtime}", int(minutes * 60), transient=False)

    def __call__(self, count: int, elapsed: float, sample: dict) -> None:
        self._bar.update(elapsed, f"calibrating {self.runtime}: {count} models measured (s)")

    def close(self) -> None:
        self._bar.close()


def _warn_threads(threads: int) -> None:
    from edgeopt.hardware.calibrate import threads_warning
    from edgeopt.report.environment import usable_cores

    warning = threads_warning(threads, usable_cores() or 1)
    if warning:  # before minutes of timing
        print(f"warning: {warning}", file=sys.stderr)


@hw.command()
def calibrate(
    runtime: Annotated[str, typer.Option("--runtime", help="onnxruntime, executorch or litert")],
    out: Annotated[
        Path | None, typer.Option("--out", help="profile JSON to write (default: this machine's, used by prune)")
    ] = None,
    threads: ThreadsOpt = 1,
    minutes: Annotated[float, typer.Option("--minutes", help="budget of the whole calibration, fit included")] = 15.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    kernels_from: Annotated[
        Path | None,
        typer.Option("--kernels-from", help="per-kernel model to lend where this runtime gives no kernel times"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure varied architectures in RUNTIME on this machine and fit a latency predictor.

    Resumable: an interrupted run keeps its measurements in OUT.samples.jsonl and the same
    command continues from them. Without --out the profile is this machine's default, which
    `edgeopt prune` latency searches then use instead of timing every candidate. Where a runtime
    gives no kernel times (a LiteRT version whose profiler edgeopt cannot read), --kernels-from an
    ExecuTorch profile of this machine (the same XNNPACK kernels) offers its per-kernel model, kept
    where cross-validation says it predicts better.
    """
    quiet(as_json)
    from edgeopt.hardware.calibrate import calibrate as run
    from edgeopt.hardware.profile import default_profile_path, load_profile

    _warn_threads(threads)

    out = out or default_profile_path(runtime.strip().lower(), threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = _CalibrationBar(runtime, minutes)
    try:
        base = load_profile(kernels_from) if kernels_from is not None else None
        profile = run(runtime, threads=threads, minutes=minutes, out=out, seed=seed, on_sample=bar, kernels_from=base)
    finally:
        bar.close()
    chosen = profile.predictor.cv.get("chosen_stats")
    emit(
        {
            "profile": str(out),
            "runtime": profile.runtime,
            "threads": profile.threads,
            "models_measured": len(profile.samples),
            "models_timed_again": sum(s.get("timings") == 2 for s in profile.samples),
            "seconds": round(profile.calibration_seconds, 1),
            "cv_within_10pct": chosen["within_10pct"] if chosen else None,
            "cv_median_error_pct": chosen["median_abs_pct"] if chosen else None,
            "error_band_pct": profile.predictor.band_pct,
            "cpu_model": profile.fingerprint.get("cpu_model"),
        },
        as_json,
        "hw calibrate",
    )


@hw.command()
def predict(
    model: ModelArg,
    profile: Annotated[str, typer.Option("--profile", help="profile JSON from `hw calibrate`, or mcu:NAME")],
    as_json: JsonOpt = False,
) -> None:
    """Latency (with error band), flash, arena, MACs, params and energy estimate of MODEL on a device."""
    quiet(as_json)
    from edgeopt.hardware.predict import predict_cost
    from edgeopt.model import load_model

    result = predict_cost(load_model(model), profile)
    for w in result.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if not as_json:
        result = {k: v for k, v in result.items() if k not in ("energy", "mcu", "warnings")}
    emit(result, as_json, "hw predict")


@hw.command()
def transfer(
    profile: Annotated[Path, typer.Option("--profile", help="calibrated profile to start from")],
    runtime: Annotated[str, typer.Option("--runtime", help="runtime to re-target to")],
    out: Annotated[Path, typer.Option("--out", help="profile JSON to write")],
    threads: ThreadsOpt = 1,
    measurements: Annotated[int, typer.Option("--measurements", min=3, help="models to measure")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Re-target a profile to another runtime or thread count from a few measurements.

    The models timed are chosen from 100 candidates: to span what the profile's predictor sees (a
    D-optimal design), or, for a runtime of another kernel library, so that their kernels cover all the
    candidates' kernels. Resumable: an interrupted run keeps its timings in OUT.samples.jsonl and the
    same command continues from them."""
    quiet(as_json)
    from edgeopt.hardware.calibrate import transfer as run
    from edgeopt.hardware.calibrate import transfer_warning
    from edgeopt.hardware.profile import load_profile
    from edgeopt.runtimes import check_runtime

    base = load_profile(profile)
    _warn_threads(threads)
    warning = transfer_warning(base.runtime, check_runtime(runtime))
    if warning:  # before minutes of timing, so that one may calibrate instead
        print(f"warning: {warning}", file=sys.stderr)
    new = run(base, runtime, threads=threads, measurements=measurements, out=out)
    emit({"profile": str(out), "runtime": new.runtime, "threads": new.threads, "measurements": len(new.samples),
          "fit_band_pct": new.predictor.band_pct,
          "fit_within_10pct": new.predictor.cv.get("transfer_loo_within_10pct")}
         | ({"warning": warning} if warning else {}),
         as_json, "hw transfer")  # fmt: skip
