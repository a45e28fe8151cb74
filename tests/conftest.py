"""Shared fixtures: an isolated dataset cache, the digits splits, and where ../shared data lives when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers on two cores: one intra-op thread each (also inherited by the
    # CLI subprocesses they start) instead of four threads fighting over two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Datasets and latency profiles in a cache of the session's own, for the whole session: session-wide, so
    module-scoped fixtures (which run before a test's own fixtures) are isolated too. Per test only, the optimize
    fixture had found the user's ~/.cache latency profile and searched ``latency`` allocation."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEOPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    # an in-process `--json` call sets EDGEOPT_QUIET=1 in os.environ; undone after every test, or a later
    # test's CLI subprocess inherits it and prints no progress (the Ctrl-C test then waited ~250 s in vain)
    monkeypatch.delenv("EDGEOPT_QUIET", raising=False)


def shared_file(name: str) -> Path:
    """A file under ../shared/data, or skip the test when it is absent (CI-less machines)."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not present")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The CPU at the end of the log (also under -q, which hides the header): which kernels the runtimes pick,
    and so some numerics, depend on it."""
    import torch

    from edgeopt.report.environment import machine_info

    info = machine_info()
    terminalreporter.write_line(
        f"cpu: {info['cpu']} ({info['usable_cores']} usable cores), flags {' '.join(info['cpu_flags'])}; "
        f"torch cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster, and immune to a busy machine's oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """The built-in digits data as (train, test)."""
    from edgeopt.data import load_dataset

    return load_dataset("digits", "train"), load_dataset("digits", "test")


# Longest files first: `pytest -n 2 --dist loadfile --no-loadscope-reorder` hands whole files to the two workers in
# collection order, so starting the long ones (CPU seconds measured per test, 2026-12-02) keeps one worker from
# finishing a slow file alone at the end. (Without --no-loadscope-reorder, xdist orders files by their number of
# tests, and the README chain and the Flower deployment, few tests but minutes each, started last.)
SLOW_FILES_FIRST = (
    "test_readme_examples.py",
    "test_federated_flower_deploy.py",
    "test_nas.py",
    "test_optimize.py",
    "test_demo.py",
    "test_cli_success.py",
    "test_federated_flower.py",
    "test_quantize_deploy.py",
    "test_export_runtimes.py",
    "test_quant_targets.py",
    "test_ondevice.py",
    "test_hardware.py",
    "test_standalone_artifacts.py",
    "test_hwtrain.py",
    "test_compression_quality.py",
    "test_compress_cli.py",
    "test_prune_channel.py",
    "test_cli_messages.py",
    "test_quant_accuracy.py",
    "test_report_presentation.py",
    "test_import_tflite.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order is kept
