"""Shell completion for ``tailor``: argcomplete answers the shell, ``tailor completion`` prints
the script that wires a shell to it.

The shell runs ``tailor`` itself with ``_ARGCOMPLETE`` set on every Tab; :func:`complete`
then prints the candidates for the line typed so far and exits before any command runs, so
completion always matches the parser, including subcommands added later.
"""

from __future__ import annotations

import argparse
from typing import Any

import argcomplete
from argcomplete.shell_integration import shellcode

SHELLS = ("bash", "zsh", "fish")


def add_command(commands: Any) -> None:
    """Register ``tailor completion {bash,zsh,fish}`` on the top-level parser."""
    completion = commands.add_parser(
        "completion",
        help="print the shell code enabling Tab completion of tailor",
        description=(
            "Print the code that makes a shell complete tailor's commands and options. "
            'bash: eval "$(tailor completion bash)" in ~/.bashrc; '
            'zsh: eval "$(tailor completion zsh)" in ~/.zshrc; '
            "fish: tailor completion fish > ~/.config/fish/completions/tailor.fish"
        ),
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to print the code for")


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell and exit when it asks for completions; return at once otherwise."""
    argcomplete.autocomplete(parser)


def script(shell: str, executable: str = "tailor") -> str:
    """The code a ``shell`` sources to complete ``executable`` (argcomplete's shellcode)."""
    if shell not in SHELLS:
        raise ValueError(f"shell must be one of {', '.join(SHELLS)}, not {shell!r}")
    return shellcode([executable], shell=shell)


def run(args: argparse.Namespace) -> int:
    print(script(args.shell), end="")
    return 0
