"""``hapi-onnx search``: choose exits and thresholds (a one-line call of ``hapi_onnx.search.search``)."""

import click

from hapi_onnx.errors import HapiError


class AccuracyType(click.ParamType):
    """An accuracy as a fraction (``0.985``) or a percentage (``98.5`` or ``98.5%``).

    Values up to 1 are fractions, values above 1 are percentages, and a trailing ``%`` always
    means a percentage (so ``1%`` is one percent, ``1`` is 100%).
    """

    name = "accuracy"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip()
        percent = text.endswith("%")
        try:
            number = float(text.rstrip("%"))
        except ValueError:
            self.fail(
                f"expected a fraction like 0.985 or a percentage like 98.5%. Got {value!r}.", param, ctx
            )
        fraction = number / 100.0 if percent or number > 1.0 else number
        if not 0.0 < fraction <= 1.0:
            self.fail(f"accuracy must be in (0, 1] or (0%, 100%]. Got {value!r}.", param, ctx)
        return fraction


@click.command("search")
@click.option("--trace", "trace_path", required=True, type=click.Path(), help="Trace .npz from calibrate.")
@click.option(
    "--latency", "latency_path", required=True, type=click.Path(), help="Latency table .json from profile."
)
@click.option("-o", "--output", required=True, type=click.Path(), help="Design .json to write.")
@click.option("--latency-sla", type=float, default=None, help="Largest allowed latency statistic, in ms.")
@click.option(
    "--percentile",
    type=click.Choice(["mean", "p50", "p90", "p99"]),
    default="mean",
    show_default=True,
    help="Latency statistic the SLA and the Pareto front use.",
)
@click.option(
    "--min-accuracy",
    type=AccuracyType(),
    default=None,
    help="Accuracy floor: a fraction (0.985) or a percentage (98.5 or 98.5%); values above 1 are percentages.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=None,
    help="Largest accuracy drop from the full model on the trace, in percentage points.",
)
@click.option(
    "--thresholds",
    type=click.Choice(["global", "per-exit"]),
    default="global",
    show_default=True,
    help="One threshold for all kept exits, or refine each exit's threshold.",
)
@click.option(
    "--confidence",
    type=float,
    default=0.9,
    show_default=True,
    help="Check accuracy constraints on one-sided bounds at this level (in [0.5, 1)), so the design keeps "
    "them on new data; 0 checks raw counts on the trace.",
)
@click.option("--plot", type=click.Path(), default=None, help="Also draw accuracy vs latency to this .png.")
def command(
    trace_path,
    latency_path,
    output,
    latency_sla,
    percentile,
    min_accuracy,
    max_accuracy_drop,
    thresholds,
    confidence,
    plot,
) -> None:
    """Choose exits and thresholds under a latency SLA and/or an accuracy floor.

    With only --latency-sla: the most accurate design within it. With --min-accuracy and/or
    --max-accuracy-drop (and optionally --latency-sla): the fastest design meeting all of them.
    At least one constraint is required. Accuracy constraints are checked on --confidence bounds
    (paired upper bound of the drop, Wilson lower bound of the accuracy), not on the raw counts of
    the calibration trace, which the fastest barely-passing design overfits.
    """
    from hapi_onnx.profile.table import LatencyTable
    from hapi_onnx.search import search
    from hapi_onnx.search.report import front_lines, plot_front, summary_lines
    from hapi_onnx.trace import Trace

    if latency_sla is None and min_accuracy is None and max_accuracy_drop is None:
        raise HapiError(
            "give at least one constraint: --latency-sla MS, --min-accuracy A or --max-accuracy-drop PP."
        )
    design = search(
        Trace.load(trace_path),
        LatencyTable.load(latency_path),
        latency_sla_ms=latency_sla,
        percentile=percentile,
        min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop,
        thresholds=thresholds,
        confidence=confidence,
    )
    design.save(output)
    for line in summary_lines(design) + [""] + front_lines(design):
        click.echo(line)
    click.echo(f"wrote {output}")
    if plot:
        plot_front(design, plot)
        click.echo(f"wrote {plot}")
