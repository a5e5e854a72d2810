"""Helpers shared by the CLI tests: run ``sdesr`` in-process and check its one-line errors."""

from __future__ import annotations

from sdesr_gui.cli import main


def run(args, capsys):
    """``main(args)`` -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *words: str, alone: bool = True) -> None:
    """Exit code 2, one ``sdesr: error:`` line holding ``words``, no traceback; with ``alone``
    nothing else on stderr (without it, warnings before the error are allowed)."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not alone:
        lines = [ln for ln in lines if ln.startswith("sdesr: error:")]
    assert len(lines) == 1 and lines[0].startswith("sdesr: error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
