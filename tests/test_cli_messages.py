"""What a newcomer reads: advice that names real flags, numbers checked before work starts,
one name per idea across commands, and no third-party noise on the terminal."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from test_cli_errors import assert_one_line_error, leftovers, run_cli

from edgeopt.cli import command
from edgeopt.cli.app import app
from edgeopt.model import save_model
from edgeopt.models import create_model

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeopt"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def all_commands() -> dict[str, click.Command]:
    """Every leaf command by its full name ("train", "hw predict"), as the CLI builds them."""
    out: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, sub in group.commands.items():
            if isinstance(sub, click.Group):
                walk(sub, f"{prefix}{name} ")
            else:
                out[prefix + name] = sub

    walk(command(), "")
    return out


def flags_of(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def advice_flags() -> list[tuple[str, str, int]]:
    """Every --flag named in the text of an exception raised in src/edgeopt: (flag, file, line)."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if not name.endswith("Error"):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    found += [(f, path.name, node.lineno) for f in FLAG.findall(sub.value)]
    return found


# ----------------------------------------------------------------------------- 9: advice that exists


def test_every_flag_an_error_message_names_exists() -> None:
    known = set().union(*(flags_of(c) for c in all_commands().values()))
    mentions = advice_flags()
    assert len(mentions) > 50  # the scan sees the error messages
    missing = sorted({f"{flag} ({file}:{line})" for flag, file, line in mentions if flag not in known})
    assert not missing, f"error messages advise flags no command has: {missing}"


def test_bench_pte_in_another_runtime_names_its_runtime(tmp_path: Path, capfd) -> None:
    (tmp_path / "r8.pte").write_bytes(b"not opened: the runtime check comes first")
    rc, _, err = run_cli(capfd, "bench", tmp_path / "r8.pte", "--runtime", "onnxruntime")
    assert_one_line_error(rc, err, "r8.pte is an ExecuTorch program: only --runtime executorch runs it")


@pytest.mark.parametrize(("name", "native", "other"), [("m.tflite", "litert", "onnxruntime"),
                                                      ("m.onnx", "onnxruntime", "litert")])  # fmt: skip
def test_artifact_in_another_runtime_names_its_own(tmp_path: Path, capfd, name: str, native: str, other: str) -> None:
    (tmp_path / name).write_bytes(b"\x01 not a model")
    rc, _, err = run_cli(capfd, "bench", tmp_path / name, "--runtime", other)
    assert_one_line_error(rc, err, f"{name} runs in {native}; to run it in {other} edgeopt must import it")
    assert f"drop --runtime to run it in {native}" in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["federate", "zoo:mlp", "--lr", "-1", "--rounds", "1"], "lr must be > 0 (got -1)"),
        (["federate", "zoo:mlp", "--server-lr", "0", "--rounds", "1"], "server_lr must be > 0 (got 0)"),
        (["federate", "zoo:mlp", "--dropout", "1.5", "--rounds", "1"], "dropout must be in [0, 1) (got 1.5)"),
        (["prune", "zoo:mlp", "--method", "magnitude", "--ratio", "0.5", "--lr", "-0.1"], "lr must be > 0"),
        (["prune", "zoo:mlp", "--target-latency-ms", "-1"], "target_latency_ms must be > 0 (got -1)"),
        (["compress", "zoo:mlp", "--lr", "-1"], "lr must be > 0"),
    ],
)
def test_numeric_flags_are_checked_before_work(tmp_path: Path, capfd, args: list[str], fragment: str) -> None:
    out = tmp_path / "out.eoz"
    rc, _, err = run_cli(capfd, *args, "--out", out)
    assert_one_line_error(rc, err, fragment)
    assert leftovers(tmp_path) == []


def test_distill_temperature_and_alpha_are_checked(tmp_path: Path, capfd) -> None:
    from edgeopt.compress.distill import DistillConfig
    from edgeopt.errors import EdgeoptError

    with pytest.raises(EdgeoptError, match=r"alpha must be in \[0, 1\]"):
        DistillConfig(alpha=1.5)
    with pytest.raises(EdgeoptError, match="temperature must be > 0"):
        DistillConfig(temperature=0)


def write_recipe(path: Path, passes: str) -> Path:
    path.write_text(f"model: zoo:mlp\ndata: digits\npasses:\n{passes}")
    return path


@pytest.mark.parametrize(
    ("passes", "fragment"),
    [
        ("  - train: {epochs: 1}\n  - train: {epochs: many}\n", "pass 'train': epochs is 'many', not a whole number"),
        ("  - train: {epochs: 1}\n  - train: {lr: -1}\n", "pass 'train': lr must be > 0 (got -1)"),
        ("  - prune: {ratio: 1.5}\n", "pass 'prune': ratio must be in [0, 1) (got 1.5)"),
        ("  - prune: {nm: [2, four]}\n", "pass 'prune': nm is [2, 'four'], not a list (a whole number each)"),
        ("  - export: {formats: onnx}\n", "pass 'export': formats is 'onnx', not a list"),
        ("  - quantize: {}\n  - prune: {ratio: 0.5}\n", "a quantized model can't be pruned"),
        ("  - quantize: {}\n  - compress: {}\n", "a quantized model can't be compressed"),
    ],
)
def test_recipe_is_checked_before_any_stage_runs(tmp_path: Path, capfd, passes: str, fragment: str) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", passes)
    rc, _, err = run_cli(capfd, "recipe", recipe, "--out", tmp_path / "run")
    assert_one_line_error(rc, err, fragment)
    assert leftovers(tmp_path) == ["r.yaml"]  # no run directory: nothing ran


def test_recipe_threads_must_be_a_number(tmp_path: Path, capfd) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: zoo:mlp\nthreads: two\npasses:\n  - train: {epochs: 1}\n")
    rc, _, err = run_cli(capfd, "recipe", recipe, "--out", tmp_path / "run")
    assert_one_line_error(rc, err, "recipe key threads is 'two', not a whole number")


def test_pruning_a_quantized_model_says_prune_first() -> None:
    from edgeopt.compress.workflows import prune_model
    from edgeopt.data import load_dataset
    from edgeopt.errors import EdgeoptError

    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    m.module.quantized = True  # what the quantizer's modules say about themselves
    with pytest.raises(EdgeoptError, match="a quantized model can't be pruned — prune before quantizing"):
        prune_model(m, load_dataset("digits", "train"), "magnitude", ratio=0.5)


def test_compress_out_must_end_in_eoz(tmp_path: Path, capfd) -> None:
    rc, _, err = run_cli(capfd, "compress", "zoo:mlp", "--out", tmp_path / "c.edgeopt", "--prune-epochs", "0",
                         "--cluster-epochs", "0")  # fmt: skip
    assert_one_line_error(rc, err, f"write it to {tmp_path / 'c.eoz'}")
    assert leftovers(tmp_path) == []


def test_nm_needs_method_nm(tmp_path: Path, capfd) -> None:
    rc, _, err = run_cli(capfd, "prune", "zoo:mlp", "--method", "magnitude", "--ratio", "0.5", "--nm", "1:4",
                         "--out", tmp_path / "p.edgeopt")  # fmt: skip
    assert_one_line_error(rc, err, "--nm applies only to --method nm")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "args", "resume_hint"),
    [
        ("edgeopt.pipeline.load_recipe", ["recipe", "r.yaml", "--out", "run"], "--resume"),
        ("edgeopt.federated.run_federated", ["federate", "zoo:mlp", "--rounds", "1", "--out", "fl"], "--resume"),
        ("edgeopt.runtimes.resolve.open_model", ["eval", "zoo:mlp"], None),
    ],
)
def test_ctrl_c_message(tmp_path: Path, capfd, monkeypatch, target: str, args: list[str], resume_hint) -> None:
    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", interrupt)
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capfd, *args)
    assert rc == 130, err
    assert "nothing half-written" not in err  # read as "nothing written" where complete files were
    assert "none was left half-written" in err
    assert (resume_hint in err) if resume_hint else "--resume" not in err


def test_demo_says_it_reuses_an_earlier_run(tmp_path: Path, capfd, monkeypatch) -> None:
    from edgeopt.pipeline.demo import DEMO_RECIPE

    run = tmp_path / "demo"
    run.mkdir()
    (run / "ledger.jsonl").write_text('{"stage": 0}\n{"stage": 1}\n')
    monkeypatch.setattr("edgeopt.pipeline.demo.run_and_report", lambda *a, **k: {"run_dir": str(run)})
    rc, _, err = run_cli(capfd, "demo", "--out", run)
    total = len(DEMO_RECIPE["passes"]) + 1
    assert rc == 0 and f"demo: reusing 2 of {total} stages already run in" in err
    rc, out, _ = run_cli(capfd, "demo", "--out", run, "--json")
    assert rc == 0 and json.loads(out)["reused_stages"] == 2


# ----------------------------------------------------------------------------- 10: flags


def test_version(capfd) -> None:
    from importlib.metadata import version

    rc, out, _ = run_cli(capfd, "--version")
    assert rc == 0 and out.strip() == f"edgeopt {version('edgeopt')}"


def test_every_subcommand_documents_debug() -> None:
    for name, cmd in all_commands().items():
        assert "--debug" in flags_of(cmd), name


def test_typo_suggests_once(capfd) -> None:
    rc, _, err = run_cli(capfd, "trian")
    assert rc != 0 and err.count("Did you mean 'train'?") == 1, err


def test_demo_help_lists_its_stages() -> None:
    from edgeopt.pipeline.demo import DEMO_RECIPE

    help_text = all_commands()["demo"].help or ""
    for stage in DEMO_RECIPE["passes"]:
        assert next(iter(stage)) in help_text, stage
    assert "ExecuTorch" in help_text and "LiteRT" in help_text and "ONNX Runtime" in help_text


def test_digits_is_the_default_data() -> None:
    cmds = all_commands()
    with_data = [n for n, c in cmds.items() if "--data" in flags_of(c)]
    assert {"train", "eval", "prune", "distill", "compress", "quantize", "federate"} <= set(with_data)
    for name in with_data:
        (param,) = [p for p in cmds[name].params if "--data" in p.opts]
        assert param.default == "digits" and not param.required, name


def test_one_name_per_idea() -> None:
    cmds = all_commands()
    visible = {n: {o for p in c.params if not getattr(p, "hidden", False) for o in p.opts} for n, c in cmds.items()}
    assert "--teacher" in visible["prune"] and "--teacher" in visible["compress"] and "--teacher" in visible["distill"]
    assert "--ratio" in visible["prune"] and "--ratio" in visible["compress"]
    assert not any({"--distill-from", "--sparsity"} & v for v in visible.values())
    for name in ("train", "prune", "distill", "compress", "quantize", "federate"):  # commands that train
        assert {"--seed", "--batch-size"} <= flags_of(cmds[name]), name
    for name in ("train", "eval", "bench", "prune", "distill", "compress", "quantize", "federate"):  # or measure
        assert "--threads" in flags_of(cmds[name]), name


def test_deprecated_names_still_work(tmp_path: Path, capfd, monkeypatch) -> None:
    """--distill-from and --sparsity reach the same settings as --teacher and --ratio (with a warning)."""
    seen: dict = {}

    def fake_deep_compress(model, data, out, sparsity, *args, **kwargs):
        seen.update(sparsity=sparsity, teacher=args[-1])
        raise KeyboardInterrupt  # stop before any work; what was passed is recorded

    monkeypatch.setattr("edgeopt.compress.workflows.deep_compress", fake_deep_compress)
    save_model(create_model("mlp", input_shape=(1, 8, 8), num_classes=10), tmp_path / "t.edgeopt")
    rc, _, err = run_cli(capfd, "compress", "zoo:mlp", "--sparsity", "0.5", "--distill-from", tmp_path / "t.edgeopt",
                         "--out", tmp_path / "c.eoz")  # fmt: skip
    assert rc == 130 and seen["sparsity"] == 0.5 and seen["teacher"] is not None
    assert "--sparsity is deprecated; use --ratio" in err and "--distill-from is deprecated; use --teacher" in err
    both = ["--sparsity", "0.5", "--ratio", "0.5"]
    rc, _, err = run_cli(capfd, "compress", "zoo:mlp", *both, "--out", tmp_path / "c.eoz")
    assert_one_line_error(rc, err, "--sparsity is the old name of --ratio")


def test_typer_app_is_the_command() -> None:
    """main() runs the same commands typer builds from ``app`` (nothing registered elsewhere is lost)."""
    assert set(typer.main.get_command(app).commands) == set(command().commands)


# ----------------------------------------------------------------------------- 12: library noise

NOISE = ("Failed to load", "_C_mxfp8", "register_constant", "_pytree")


def test_quantize_prints_no_library_noise(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgeopt.cli", "quantize", "zoo:mlp", "--calib", "minmax", "--calib-samples", "8",
           "--no-eval", "--out", str(tmp_path / "q.edgeopt"), "--json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "EDGEOPT_DEBUG"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"].endswith("q.edgeopt")
    noisy = [ln for ln in proc.stderr.splitlines() if any(n in ln for n in NOISE)]
    assert not noisy, noisy


def test_debug_keeps_library_logs_visible(capfd) -> None:
    """Without --debug the noisy loggers are lowered to errors; with it they are left as they were."""
    import logging

    from edgeopt.cli.quiet import NOISY_LOGGERS

    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    before = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.NOTSET)
        assert run_cli(capfd, "--debug", "zoo")[0] == 0
        assert all(lg.level == logging.NOTSET for lg in loggers)
        assert run_cli(capfd, "zoo")[0] == 0
        assert all(lg.level == logging.ERROR for lg in loggers)
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def test_help_paragraphs_flow_to_the_terminal() -> None:
    """A command's docstring is wrapped at ~100 characters in the source; its --help reflows it to the
    terminal instead of keeping those line breaks (ragged lines at 80 columns)."""
    import inspect

    from typer.testing import CliRunner

    checked = 0
    for name, cmd in all_commands().items():
        pairs = [(a.split()[-1], b.split()[0]) for p in inspect.cleandoc(cmd.help or "").split("\n\n")
                 for a, b in zip(p.splitlines(), p.splitlines()[1:], strict=False)]  # fmt: skip
        plain = [f"{x} {y}" for x, y in pairs if x.isalpha() and y.isalpha()]
        if not plain:
            continue
        result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert result.exit_code == 0, result.output
        assert plain[0] in result.output, (name, plain[0])
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("args", [["prune", "--help"], ["hw"]])
def test_help_goes_to_stdout(args: list[str]) -> None:
    """Help is the output asked for (`edgeopt prune --help | less`): while a command runs, ``main`` points
    fd 1 at stderr to keep libraries' chatter off stdout, but not for help. (A subprocess: pytest's
    capture hands ``sys.stdout`` its own file, past fd 1.)"""
    proc = subprocess.run([sys.executable, "-m", "edgeopt.cli", *args], capture_output=True, text=True, timeout=120)
    assert "Usage: edgeopt" in proc.stdout and "Usage:" not in proc.stderr, (proc.stdout, proc.stderr)
    assert proc.returncode == (0 if "--help" in args else 2)  # a bare group: its help, click's usage-error code


def test_asks_for_help() -> None:
    from edgeopt.cli import asks_for_help

    root = command()
    assert asks_for_help(root, []) and asks_for_help(root, ["hw"]) and asks_for_help(root, ["train", "--help"])
    assert not asks_for_help(root, ["train", "zoo:mlp", "--out", "x"]) and not asks_for_help(root, ["hw", "predict"])


def test_a_typo_prints_its_usage_error_on_stderr(capfd) -> None:
    rc, out, err = run_cli(capfd, "trian")
    assert rc != 0 and out == "" and "Usage:" in err
