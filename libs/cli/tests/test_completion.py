"""`tailor completion`: a script per shell, and Tab completion that follows the parser."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from argcomplete.finders import CompletionFinder

from tailor_cli import main

IFS = "\013"  # argcomplete's default separator between candidates


REGISTRATIONS = {
    "bash": "complete -o nospace -o default -o bashdefault -F _python_argcomplete tailor",
    "zsh": "compdef _python_argcomplete tailor",
    "fish": "complete --command tailor",
}


@pytest.mark.parametrize("shell", sorted(REGISTRATIONS))
def test_completion_prints_a_script_registering_tailor(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main.main(["completion", shell]) == 0

    assert REGISTRATIONS[shell] in capsys.readouterr().out


def test_completion_refuses_an_unknown_shell(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["completion", "tcsh"])

    assert exited.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err


class _Finder(CompletionFinder):
    """argcomplete's finder, its debug output left on stderr: by default it opens file
    descriptor 9, which under pytest may be one of pytest's own (argcomplete's own tests
    override this hook the same way)."""

    def _init_debug_stream(self) -> None:
        pass


def _candidates(line: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Drive argcomplete in-process the way the shell script does: the line typed so far in
    COMP_LINE, the cursor in COMP_POINT, _ARGCOMPLETE=1 (the command is the first word);
    a unique match ends in a space, as the shell inserts it."""
    monkeypatch.setenv("_ARGCOMPLETE", "1")
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    output = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        _Finder()(main._parser(), output_stream=output, exit_method=_exit)
    assert exited.value.code == 0
    return output.getvalue().split(IFS)


def _exit(code: int) -> None:
    raise SystemExit(code)


def test_tab_completes_a_subcommand_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _candidates("tailor con", monkeypatch) == ["consent "]


def test_tab_lists_the_actions_of_a_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(_candidates("tailor dsr e", monkeypatch)) == ["erase", "export"]
    assert _candidates("tailor completion f", monkeypatch) == ["fish "]


def test_installed_tailor_answers_the_shell(tmp_path: Path) -> None:
    """The console script itself completes, as the shell calls it, before any command runs."""
    tailor = shutil.which("tailor", path=str(Path(sys.executable).parent))
    assert tailor, "the tailor console script is not installed next to this Python"
    answer = tmp_path / "completions"
    line = "tailor con"
    environment = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }

    subprocess.run([tailor], env=environment, check=True, timeout=60)

    assert answer.read_text().split(IFS) == ["consent "]
