"""One exception type for every mistake a user can make.

The CLI prints ``EdgeoptError`` as a single line (problem + fix) and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeoptError(Exception):
    """A problem with the user's input, stated with how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} — {fix}")


class UnsupportedOpError(EdgeoptError):
    """An importer met an operator it cannot translate."""

    def __init__(self, op: str, node: str, source: str) -> None:
        super().__init__(
            f"unsupported {source} op '{op}' at node '{node}'",
            "edgeopt imports the common mobile op set (conv, dense, pooling, add/mul, activations, "
            "reshape, concat, pad, softmax, batch norm); simplify the model or open an issue",
        )
        self.op = op
        self.node = node
