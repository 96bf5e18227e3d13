"""Human-readable lines about a design (the CLI prints them; library code never prints)."""

import os

import numpy as np

from hapi_onnx.lazy import lazy_import
from hapi_onnx.search.design import Design


def summary_lines(design: Design) -> list[str]:
    """The chosen design: exits, thresholds, predicted accuracy and latency, exit distribution."""
    p, ref, c = design.predicted, design.reference, design.constraints
    chain = " -> ".join(
        [f"{name} (t={t:.4f})" for name, t in zip(design.exits, design.thresholds, strict=False)]
        + [design.exits[-1]]
    )
    wanted = []
    if c.get("min_accuracy") is not None:
        wanted.append(f"accuracy >= {100 * c['min_accuracy']:.2f}%")
    if c.get("max_accuracy_drop") is not None:
        wanted.append(f"accuracy drop <= {c['max_accuracy_drop']:g} pp")
    if c.get("latency_sla_ms") is not None:
        wanted.append(f"{design.latency_stat} latency <= {c['latency_sla_ms']:g} ms")
    dist = ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(design.exits, p["exit_distribution"], strict=True))
    return [
        f"design: {chain}",
        f"objective: {design.objective} ({design.latency_stat}) subject to {' and '.join(wanted)}",
        f"predicted on {design.search['num_samples']} search samples ({design.search['space']} thresholds): "
        f"accuracy {100 * p['accuracy']:.2f}% (full model {100 * ref['accuracy']:.2f}%), "
        f"mean {p['mean_ms']:.3f} ms, p90 {p['p90_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms",
        f"speed-up {p['speedup_vs_full']:.2f}x vs the full model ({ref['mean_ms']:.3f} ms measured; "
        f"staged without early exit {ref['no_exit_mean_ms']:.3f} ms predicted)",
        f"exit distribution: {dist}",
    ]


def front_lines(design: Design, max_rows: int = 25) -> list[str]:
    """The Pareto front as an aligned table (evenly thinned to ``max_rows``; the chosen point kept)."""
    front = design.pareto_front
    chosen = next(
        (
            i
            for i, q in enumerate(front)
            if q["exits"] == design.exits and q["thresholds"] == design.thresholds
        ),
        None,
    )
    rows = list(range(len(front)))
    if len(front) > max_rows:
        rows = sorted(
            set(np.linspace(0, len(front) - 1, max_rows).round().astype(int).tolist()) | {chosen} - {None}
        )
    table = [("", f"{design.latency_stat} ms", "accuracy", "exits", "thresholds")]
    for i in rows:
        q = front[i]
        table.append(
            (
                "*" if i == chosen else "",
                f"{q['latency_ms']:.3f}",
                f"{100 * q['accuracy']:.2f}%",
                ", ".join(q["exits"]),
                _thresholds(q["thresholds"]),
            )
        )
    widths = [max(len(r[k]) for r in table) for k in range(len(table[0]))]
    shown = f"{len(rows)} of {len(front)} points" if len(rows) < len(front) else f"{len(front)} points"
    lines = [f"Pareto front, accuracy vs {design.latency_stat} latency ({shown}; * chosen):"]
    for r in table:
        lines.append(
            "  ".join(
                cell.rjust(w) if k in (1, 2) else cell.ljust(w)
                for k, (cell, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return lines


def _thresholds(values: list[float]) -> str:
    if len(values) > 1 and len(set(values)) == 1:
        return f"{values[0]:.4f} (all)"
    return ", ".join(f"{t:.4f}" for t in values) or "-"


def plot_front(design: Design, path: str | os.PathLike) -> None:
    """Draw accuracy against latency for the Pareto front, the chosen design and the full model.

    Needs matplotlib (``pip install 'hapi-onnx[plot]'``); uses the Agg backend (no display).
    """
    from hapi_onnx.files import atomic_output

    matplotlib = lazy_import("matplotlib", "plot")
    matplotlib.use("Agg")
    plt = lazy_import("matplotlib.pyplot", "plot")
    front = design.pareto_front
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.step(
        [q["latency_ms"] for q in front],
        [100 * q["accuracy"] for q in front],
        where="post",
        marker=".",
        label="Pareto front (search data)",
    )
    ax.scatter(
        [design.predicted[f"{design.latency_stat}_ms"]],
        [100 * design.predicted["accuracy"]],
        color="red",
        zorder=3,
        label="chosen",
    )
    ax.axhline(100 * design.reference["accuracy"], color="grey", linestyle=":", label="full model accuracy")
    ax.scatter(
        [design.reference["mean_ms"]],
        [100 * design.reference["accuracy"]],
        color="black",
        marker="x",
        zorder=3,
        label="full model (measured mean)",
    )
    if design.constraints.get("latency_sla_ms") is not None:
        ax.axvline(design.constraints["latency_sla_ms"], color="orange", linestyle="--", label="SLA")
    ax.set_xlabel(f"predicted {design.latency_stat} latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"HAPI design space on {design.device}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
