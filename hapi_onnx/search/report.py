"""Human-readable lines about a design (the CLI prints them; library code never prints)."""

import os
from typing import TYPE_CHECKING

import numpy as np

from hapi_onnx.choice import ExitChoice
from hapi_onnx.design import Design, FrontPoint
from hapi_onnx.lazy import lazy_import

if TYPE_CHECKING:
    from hapi_onnx.search.backbones import BackboneSearch


def summary_lines(design: Design) -> list[str]:
    """The chosen design: exits, thresholds, predicted accuracy (with its bounds) and latency, exit
    distribution, and the guarantee it comes with."""
    p, ref, c = design.predicted, design.reference, design.constraints
    chain = " -> ".join(_exit_text(e, 4) for e in design.exits)
    level = _level(design)
    what = "agreement" if c.reference == "final" else "accuracy"
    wanted = []
    if c.min_accuracy is not None:
        wanted.append(f"{what} >= {100 * c.min_accuracy:.2f}%")
    if c.max_accuracy_drop is not None:
        wanted.append(f"{'disagreement' if c.reference == 'final' else 'accuracy drop'} <= {c.max_accuracy_drop:g} pp")
    if wanted and level:
        wanted[-1] += f" ({level})"
    if c.latency_sla_ms is not None:
        wanted.append(f"{design.latency_stat} latency <= {c.latency_sla_ms:g} ms")
    accuracy = f"{what} {100 * p['accuracy']:.2f}%"
    drop = 100 * (ref["accuracy"] - p["accuracy"])
    if level:
        test = (design.search.get("guarantee") or {}).get("test", "loss")
        loss = "loss rate" if c.certified and test == "loss" else "drop"
        accuracy += (
            f" (>= {100 * p['accuracy_lower_bound']:.2f}%; drop {drop:.2f} pp, {loss} <= "
            f"{p['accuracy_drop_bound_pp']:.2f} pp; {level})"
        )
    dist = ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(design.exit_names, p["exit_distribution"], strict=True))
    lines = [
        f"design: {chain}",
        f"objective: {design.objective} ({design.latency_stat}) subject to {' and '.join(wanted)}",
        f"predicted on {design.search['num_samples']} calibration samples ({c.space} thresholds): "
        f"{accuracy}, full model {100 * ref['accuracy']:.2f}%; "
        f"mean {p['mean_ms']:.3f} ms, p90 {p['p90_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms",
        f"speed-up {p['speedup_vs_full']:.2f}x vs the full model ({ref['mean_ms']:.3f} ms measured; "
        f"staged without early exit {ref['no_exit_mean_ms']:.3f} ms predicted)",
        f"exit distribution: {dist}",
    ]
    if searched := search_text(design):
        lines.append(f"search: {searched}")
    if guarantee := guarantee_text(design):
        lines.append(f"guarantee: {guarantee}")
    if stages := design.search.get("stages"):
        timed = sum(q.get("source") == "stages" for q in p.get("positions") or [])
        lines.append(f"latency: {timed} of {len(design.exits)} exit positions timed as the bundle's own stages "
                     f"({stages['runs']} predicts; {stages['timed']} design(s) timed in {stages['rounds']} round(s), "
                     f"choice {'stable' if stages['stable'] else 'not stable: the rounds ran out'}), the rest "
                     "summed from the table's pieces")
    return lines


def guarantee_text(design: Design) -> str:
    """What the design's accuracy constraints are certified to (empty without a split guarantee)."""
    guarantee = design.search.get("guarantee")
    if not guarantee:
        return ""
    text = f"{guarantee['statement']}; {guarantee['certified']} design(s) certified"
    if price := guarantee.get("price"):
        text += (f"; its price: speed-up x{price['certified_speedup']:.2f} certified vs "
                 f"x{price['uncertified_speedup']:.2f} uncertified (raw calibration counts)")
        samples = price.get("samples_for_half_the_gap")
        if samples and design.constraints.reference == "final":
            text += f"; about {samples} unlabelled calibration samples would close half the gap"
        elif samples:
            text += (f"; about {samples} labelled calibration samples would close half the gap (--reference "
                     "final takes unlabelled ones, but bounds the stricter disagreement)")
        elif price["uncertified_speedup"] > 1.01 * price["certified_speedup"]:
            text += "; more samples alone would not close half the gap along this path"
    return text


def search_text(design: Design) -> str:
    """Which optimiser chose the design, over how many candidate exits, and whether its choice is the
    exact optimum (empty when the design does not record it)."""
    search = design.search
    if "optimiser" not in search:
        return ""
    exact = "exact" if search.get("exact", True) else "local search, not proven optimal: see search.optimality"
    return f"{search['optimiser']} optimiser over {len(search.get('candidates', []))} candidate exits ({exact})"


def front_lines(design: Design, max_rows: int = 25) -> list[str]:
    """The Pareto front as an aligned table (evenly thinned to ``max_rows``; the chosen point kept).

    With accuracy bounds, each row also shows the drop's upper bound and whether the point meets
    every constraint; a chosen design off the raw front (a more accurate design as fast as it was
    refused on its bound) is shown as an extra row in latency order.
    """
    chosen_point = FrontPoint(
        exits=design.exits,
        accuracy=design.predicted["accuracy"],
        latency_ms=design.predicted[f"{design.latency_stat}_ms"],
        accuracy_lower_bound=design.predicted["accuracy_lower_bound"],
        accuracy_drop_bound_pp=design.predicted["accuracy_drop_bound_pp"],
        feasible=True,
    )
    front = list(design.pareto_front)
    chosen = next((i for i, q in enumerate(front) if q.exits == design.exits), None)
    off_front = chosen is None
    if off_front:
        chosen = sum(q.latency_ms <= chosen_point.latency_ms for q in front)
        front.insert(chosen, chosen_point)
    rows = list(range(len(front)))
    if len(front) > max_rows:
        rows = sorted(set(np.linspace(0, len(front) - 1, max_rows).round().astype(int).tolist()) | {chosen})
    bounds = bool(_level(design))
    columns = ["", f"{design.latency_stat} ms", "accuracy", "drop <=", "ok", "exits", "thresholds"]
    header = tuple(columns if bounds else columns[:3] + columns[5:])
    table = [header]
    for i in rows:
        q = front[i]
        cells = ["*" if i == chosen else "", f"{q.latency_ms:.3f}", f"{100 * q.accuracy:.2f}%"]
        if bounds:
            cells += [f"{q.accuracy_drop_bound_pp:.2f} pp", "yes" if q.feasible else "no"]
        names = [e.name for e in q.exits]
        table.append((*cells, ", ".join(names), _thresholds([e.threshold for e in q.exits[:-1]])))
    numeric = {1, 2, 3} if bounds else {1, 2}
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    size = len(design.pareto_front)
    listed = len(rows) - off_front  # front points among the rows
    shown = f"{listed} of {size} points" if listed < size else f"{size} points"
    note = f"; ok: meets every constraint, {_level(design)}" if bounds else ""
    lines = [f"Pareto front, accuracy vs {design.latency_stat} latency ({shown}; * chosen{note}):"]
    if off_front:
        lines.append("  (the chosen design is off the raw front: faster or as fast designs fail the accuracy bound)")
    for r in table:
        lines.append(
            "  ".join(
                cell.rjust(w) if k in numeric else cell.ljust(w)
                for k, (cell, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return lines


def _level(design: Design) -> str:
    """How the accuracy constraints were checked (``"certified at level 0.9"``, ``"90%-level bounds"``),
    or ``""`` on raw counts."""
    c = design.constraints
    if not c.uses_bounds:
        return ""
    return f"certified at level {c.bound_level:g}" if c.certified else f"{100 * c.bound_level:g}%-level bounds"


def _exit_text(choice: ExitChoice, digits: int) -> str:
    """``exit3 (t=0.9610)``, or the bare name of the final classifier."""
    return choice.name if choice.threshold is None else f"{choice.name} (t={choice.threshold:.{digits}f})"


def _thresholds(values: list[float]) -> str:
    if len(values) > 1 and len(set(values)) == 1:
        return f"{values[0]:.4f} (all)"
    return ", ".join(f"{t:.4f}" for t in values) or "-"


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display); needs hapi-onnx's ``plot`` extra."""
    matplotlib = lazy_import("matplotlib", "plot")
    matplotlib.use("Agg")
    return lazy_import("matplotlib.pyplot", "plot")


def plot_front(design: Design, path: str | os.PathLike) -> None:
    """Draw accuracy against latency for the Pareto front, the chosen design and the full model.

    Needs matplotlib (hapi-onnx's ``plot`` extra); uses the Agg backend (no display).
    """
    from hapi_onnx.files import atomic_output

    plt = _pyplot()
    front = design.pareto_front
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.step(
        [q.latency_ms for q in front],
        [100 * q.accuracy for q in front],
        where="post",
        marker=".",
        label="Pareto front (search data)",
    )
    level = _level(design)
    refused = [q for q in front if not q.feasible]
    if level and refused:
        ax.scatter(
            [q.latency_ms for q in refused],
            [100 * q.accuracy for q in refused],
            facecolors="none",
            edgecolors="grey",
            zorder=3,
            label=f"fails a constraint ({level})",
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
    if design.constraints.latency_sla_ms is not None:
        ax.axvline(design.constraints.latency_sla_ms, color="orange", linestyle="--", label="SLA")
    ax.set_xlabel(f"predicted {design.latency_stat} latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"HAPI design space on {design.device}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def backbone_lines(result: "BackboneSearch") -> list[str]:
    """One line per backbone: its full model, its best design under the constraints (or why none), and
    whether it was chosen."""
    stat = result.design.latency_stat
    width = max(len(b.label) for b in result.backbones)
    lines = [f"Models ({len(result.backbones)}; full model on the calibration data, measured {stat} latency):"]
    for b in result.backbones:
        mark = "*" if b.label == result.chosen else " "
        full = "" if b.full_accuracy is None else f"{100 * b.full_accuracy:.2f}%"
        lines.append(f"  {mark} {b.label:<{width}}  full model {full} at {b.full_ms:.3f} ms (mean)")
        if b.best is not None:
            names = ", ".join(e.name for e in b.best.exits)
            lines.append(f"      best design  {100 * b.best.accuracy:.2f}% at {b.best.latency_ms:.3f} ms {stat}  "
                         f"(exits {names})")
        lines.append(f"      {b.note}")
    if statement := result.selection.get("statement"):
        lines.append(f"selection: {statement}")
    return lines


def joint_front_lines(result: "BackboneSearch", max_rows: int = 25) -> list[str]:
    """The joint Pareto front, each point labelled by its backbone (* the chosen design, added in latency
    order when it is off the raw front)."""
    design = result.design
    chosen = _chosen_point(result)
    front = list(result.front)
    at = next((i for i, p in enumerate(front) if p.backbone == chosen.backbone and p.point.exits == design.exits), None)
    off_front = at is None
    if off_front:
        at = sum(p.point.latency_ms <= chosen.point.latency_ms for p in front)
        front.insert(at, chosen)
    rows = list(range(len(front)))
    if len(front) > max_rows:
        rows = sorted(set(np.linspace(0, len(front) - 1, max_rows).round().astype(int).tolist()) | {at})
    table = [("", "model", f"{design.latency_stat} ms", "accuracy", "exits", "thresholds")]
    for i in rows:
        p = front[i]
        table.append(("*" if i == at else "", p.backbone, f"{p.point.latency_ms:.3f}", f"{100 * p.point.accuracy:.2f}%",
                      ", ".join(e.name for e in p.point.exits), _thresholds([e.threshold for e in p.point.exits[:-1]])))
    widths = [max(len(r[k]) for r in table) for k in range(len(table[0]))]
    size = len(result.front)
    shown = f"{len(rows) - off_front} of {size} points" if len(rows) - off_front < size else f"{size} points"
    lines = [f"Joint Pareto front of {len(result.backbones)} models, accuracy vs {design.latency_stat} latency on "
             f"the calibration data ({shown}; * chosen):"]
    if off_front:
        lines.append("  (the chosen design is off the raw front: its place was fixed before certification)")
    for r in table:
        lines.append("  ".join(cell.rjust(w) if k in (2, 3) else cell.ljust(w)
                               for k, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    return lines


def _chosen_point(result: "BackboneSearch"):
    """The chosen design as a labelled front point."""
    from hapi_onnx.search.backbones import LabelledPoint

    p = result.design.predicted
    point = FrontPoint(result.design.exits, p["accuracy"], p[f"{result.design.latency_stat}_ms"],
                       p["accuracy_lower_bound"], p["accuracy_drop_bound_pp"], True)
    return LabelledPoint(result.chosen, point)


def plot_joint_front(result: "BackboneSearch", path: str | os.PathLike) -> None:
    """Draw every backbone's part of the joint front in its own colour, the full models and the choice.

    Needs matplotlib (hapi-onnx's ``plot`` extra); uses the Agg backend (no display).
    """
    from hapi_onnx.files import atomic_output

    plt = _pyplot()
    design = result.design
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.step([p.point.latency_ms for p in result.front], [100 * p.point.accuracy for p in result.front],
            where="post", color="lightgrey", zorder=1, label="joint Pareto front")
    for k, b in enumerate(result.backbones):
        points = [p.point for p in result.front if p.backbone == b.label]
        colour = f"C{k % 10}"
        ax.scatter([q.latency_ms for q in points], [100 * q.accuracy for q in points], color=colour, s=12,
                   zorder=2, label=b.label)
        if b.full_accuracy is not None:
            ax.scatter([b.full_ms], [100 * b.full_accuracy], color=colour, marker="x", zorder=3)
    chosen = _chosen_point(result).point
    ax.scatter([chosen.latency_ms], [100 * chosen.accuracy], facecolors="none", edgecolors="red", s=80, zorder=4,
               label=f"chosen ({result.chosen})")
    if design.constraints.latency_sla_ms is not None:
        ax.axvline(design.constraints.latency_sla_ms, color="orange", linestyle="--", label="SLA")
    if design.constraints.min_accuracy is not None:
        ax.axhline(100 * design.constraints.min_accuracy, color="grey", linestyle=":", label="accuracy floor")
    ax.set_xlabel(f"predicted {design.latency_stat} latency (ms); x: full model, measured mean")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{len(result.backbones)} models, one design space, on {design.device}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
