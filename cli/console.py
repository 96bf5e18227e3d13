"""What commands print besides their result: progress, logs and tables, by one rule.

Results go to stdout. Progress and logs go to stderr only when it is a terminal, or with the
root group's ``--verbose``; ``--quiet`` silences them. On a terminal, progress redraws one line
and is cleared before anything else is printed (an error included); otherwise it is whole lines.
So an error is never preceded by a half-written progress line.
"""

import sys
import time
from collections.abc import Callable

import click

_state = {"mode": "auto", "live": False}  # mode: auto | verbose | quiet; live: a progress line is shown


def set_mode(mode: str) -> None:
    """``auto`` (stderr a terminal), ``verbose`` (always) or ``quiet`` (never)."""
    _state["mode"] = mode


def chatty() -> bool:
    """Whether progress and logs are printed."""
    mode = _state["mode"]
    return mode == "verbose" or (mode == "auto" and _stderr_is_terminal())


def log(line: str) -> None:
    """A log line on stderr, when :func:`chatty`."""
    if chatty():
        clear()
        click.echo(line, err=True)


def clear() -> None:
    """Erase a live progress line (before an error, a log line or the result)."""
    if _state["live"]:
        click.echo("\r\033[K", err=True, nl=False)
        _state["live"] = False


def progress(label: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback: a redrawn line on a terminal, else whole lines every ~10%.

    ``progress(0, total)`` marks the start of the work (steps that first load or check data call it).
    """
    start = time.perf_counter()
    shown = {"tenth": -1}

    def update(done: int, total: int) -> None:
        nonlocal start
        if done == 0:  # the work starts now: the rate and ETA count from here
            start = time.perf_counter()
            return
        if not chatty() or total <= 0:
            return
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else 0.0
        text = f"{label}: {done}/{total} ({100 * done / total:.0f}%, {elapsed:.0f} s, eta {eta:.0f} s)"
        if _stderr_is_terminal():
            click.echo(f"\r\033[K{text}", err=True, nl=False)
            _state["live"] = done < total
            if done >= total:
                click.echo("", err=True)
        else:
            tenth = 10 * done // total
            if tenth > shown["tenth"]:
                shown["tenth"] = tenth
                click.echo(text, err=True)

    return update


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart, headers first."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
