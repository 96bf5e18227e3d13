"""Human-readable view of a latency table: lines of text, printed by the CLI."""

from hapi_onnx.profile.table import LatencyTable, PieceLatency, TimingStats


def table_lines(table: LatencyTable) -> list[str]:
    """One line per piece: name, inputs -> outputs shapes, n, mean, p50, p90, p99 (ms).

    Segments and heads are interleaved in path order (segment0, head0, segment1, ...), then the
    per-call overhead and the monolithic model.
    """
    shapes = table.extra.get("shapes", {})
    rows: list[tuple[str, str, TimingStats]] = []

    def add(piece: PieceLatency) -> None:
        rows.append((piece.name, _shape_text(shapes.get(piece.name)), piece.stats))

    for k, segment in enumerate(table.segments):
        add(segment)
        if k < len(table.heads):
            add(table.heads[k])
    rows.append(("overhead", _shape_text(shapes.get("overhead")), table.overhead))
    rows.append(("monolithic", _shape_text(shapes.get("monolithic")), table.monolithic))
    name_w = max(len("piece"), *(len(r[0]) for r in rows))
    shape_w = max(len("inputs -> outputs"), *(len(r[1]) for r in rows))
    header = (
        f"{'piece':<{name_w}}  {'inputs -> outputs':<{shape_w}}  {'n':>6}  "
        f"{'mean':>9}  {'p50':>9}  {'p90':>9}  {'p99':>9}  (ms)"
    )
    lines = [
        f"device {table.device!r} ({', '.join(table.environment.get('providers_used', []))}), "
        f"batch {table.batch_size}, onnxruntime {table.environment.get('onnxruntime')}, "
        f"CPU {table.environment.get('cpu_model')}",
        header,
        "-" * len(header),
    ]
    for name, shape, s in rows:
        lines.append(
            f"{name:<{name_w}}  {shape:<{shape_w}}  {s.n:>6}  {s.mean_ms:>9.4f}  {s.p50_ms:>9.4f}  "
            f"{s.p90_ms:>9.4f}  {s.p99_ms:>9.4f}"
        )
    path = sum(table.segment_costs("mean")) + table.overhead.mean_ms
    lines.append(
        f"sum of segments (overhead removed) + one call overhead: {path:.4f} ms mean; "
        f"monolithic: {table.monolithic.mean_ms:.4f} ms mean"
    )
    if table.boundaries:
        cuts = table.cut_costs("mean")
        lines.append(
            f"cutting at an exit (fused segment pairs vs apart): {1e3 * sum(cuts) / len(cuts):.1f} us mean per cut, "
            f"charged to the exits a design keeps; segments - cuts + one call: {path - sum(cuts):.4f} ms mean"
        )
        entry = table.entry_costs("mean")
        if any(entry):
            lines.append(
                f"  {sum(e > 0 for e in entry)} cut(s) cost more than the segment before them: "
                f"{1e3 * sum(entry):.1f} us in all on the next segment's side, not paid by samples leaving there"
            )
    return lines


def _shape_text(shapes: dict | None) -> str:
    if not shapes:
        return "?"

    def fmt(items: list) -> str:
        return ", ".join("x".join(str(d) for d in shape) for shape in items)

    return f"{fmt(shapes['inputs'])} -> {fmt(shapes['outputs'])}"
