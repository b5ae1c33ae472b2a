"""Command-line flags that work anywhere on the line (``omni-agent run ... --debug``).

Every error line says "(--debug for details)", so ``--debug`` must work after the sub-command
too, where a user adds it to the command they just ran. Click reads group options only before
the sub-command; :class:`DebugAnywhereGroup` moves the flag there.
"""

from __future__ import annotations

import click
from typer.core import TyperGroup

__all__ = ["DebugAnywhereGroup", "move_flag_first"]


def move_flag_first(args: list[str], flag: str) -> list[str]:
    """``args`` with every ``flag`` before ``--`` moved to the front (once)."""
    end = args.index("--") if "--" in args else len(args)
    if flag not in args[:end]:
        return list(args)
    rest = [a for a in args[:end] if a != flag] + args[end:]
    return [flag, *rest]


class DebugAnywhereGroup(TyperGroup):
    """A typer group whose ``--debug`` may also follow the sub-command and its arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, move_flag_first(args, "--debug"))
