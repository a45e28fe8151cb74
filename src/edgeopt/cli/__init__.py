"""Command line: parse flags, call the Python API, print a rich table or one JSON object.

Every command is a thin call into ``edgeopt``'s API. Errors a user can cause print one
line and exit 2 (``--debug`` shows the traceback); Ctrl-C exits 130 and leaves nothing
half-written (every writer in edgeopt is atomic).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from edgeopt.cli import adapt, commands, compress, federate, hardware, optimize, quantize, search  # noqa: F401  (each registers its commands)
from edgeopt.cli import debug as debug_command  # noqa: F401  (registers `edgeopt debug`)
from edgeopt.cli.app import STDOUT_FD, app
from edgeopt.cli.quiet import silence_library_noise
from edgeopt.errors import EdgeoptError

__all__ = ["app", "entry", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per user error, tracebacks only with --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("EDGEOPT_DEBUG") == "1"
    args = (["--debug"] if "--debug" in args else []) + [a for a in args if a != "--debug"]
    if not debug:  # libraries' housekeeping chatter is for their developers, not our users
        silence_library_noise()
    root = command()
    sys.stdout.flush()
    STDOUT_FD.append(os.dup(1))
    if not asks_for_help(root, args):  # help is what was asked for: it stays on stdout (`... --help | less`)
        os.dup2(2, 1)  # anything a library prints lands on stderr
    try:
        rv = root.main(args=args, prog_name="edgeopt", standalone_mode=False)
        if rv == 130:  # typer turns KeyboardInterrupt into an exit code in non-standalone mode
            raise KeyboardInterrupt
        return rv if isinstance(rv, int) else 0
    except EdgeoptError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        print(interrupted_message(args), file=sys.stderr)
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


def command() -> click.Group:
    """The click command behind ``app``, with what typer does not add by itself: ``--version`` on the
    root, ``--debug`` listed in every subcommand's help (``main`` reads it anywhere on the line), and
    one "Did you mean" on a typo'd command (click >= 8.2 suggests by itself; typer adds a second)."""
    import inspect

    import click
    import typer.main

    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    if "possibilities" in inspect.signature(click.exceptions.NoSuchCommand).parameters:
        root.suggest_commands = False  # type: ignore[attr-defined]
    root.params.append(
        click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
                     help="print edgeopt's version and exit")  # fmt: skip
    )
    debug = click.Option(["--debug"], is_flag=True, expose_value=False, help="show tracebacks on errors")

    def add_debug(group: click.Group) -> None:
        for sub in group.commands.values():
            if isinstance(sub, click.Group):
                add_debug(sub)
            elif not any("--debug" in p.opts for p in sub.params):
                sub.params.append(debug)

    add_debug(root)
    return root


def asks_for_help(root: click.Group, args: list[str]) -> bool:
    """Whether ``args`` only ask for help: ``--help`` anywhere, or a group (``edgeopt``, ``edgeopt hw``)
    named without one of its commands. Pure."""
    if "--help" in args:
        return True
    cmd: click.Command = root
    for word in (a for a in args if not a.startswith("-")):
        if not isinstance(cmd, click.Group) or word not in cmd.commands:
            break
        cmd = cmd.commands[word]
    return isinstance(cmd, click.Group)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    with os.fdopen(os.dup(STDOUT_FD[-1] if STDOUT_FD else 1), "w") as out:  # the real stdout
        out.write(f"edgeopt {version('edgeopt')}\n")
    ctx.exit(0)


def interrupted_message(args: list[str]) -> str:
    """What Ctrl-C leaves: finished files stay, none is half-written; resumable commands say how to go on."""
    words = [a for a in args if not a.startswith("-")]
    name = " ".join(words[:2]) if words[:1] == ["hw"] else (words[0] if words else "")
    text = "interrupted: files are written only when complete, so none was left half-written"
    if name in ("recipe", "federate"):
        text += "; rerun the same command with --resume to continue where it stopped"
    elif name in ("demo", "hw calibrate", "search", "optimize"):
        text += "; rerun the same command to continue where it stopped"
    return text


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
