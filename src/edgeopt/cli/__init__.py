"""Command line: parse flags, call the Python API, print a rich table or one JSON object.

Every command is a thin call into ``edgeopt``'s API. Errors a user can cause print one
line and exit 2 (``--debug`` shows the traceback); Ctrl-C exits 130 and leaves nothing
half-written (every writer in edgeopt is atomic).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

from edgeopt.cli import commands, compress, federate, hardware, quantize  # noqa: F401  (each registers its commands)
from edgeopt.cli.app import STDOUT_FD, app
from edgeopt.errors import EdgeoptError

__all__ = ["app", "entry", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per user error, tracebacks only with --debug."""
    import click

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("EDGEOPT_DEBUG") == "1"
    args = (["--debug"] if "--debug" in args else []) + [a for a in args if a != "--debug"]
    if not debug:  # libraries' deprecation chatter is for their developers, not our users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    sys.stdout.flush()
    STDOUT_FD.append(os.dup(1))
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
        fd = STDOUT_FD.pop()
        os.dup2(fd, 1)
        os.close(fd)


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
