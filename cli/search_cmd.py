"""``hapi-onnx search``: choose exits and thresholds (a one-line call of ``hapi_onnx.search.search``)."""

import click
from hapi_onnx_cli.options import Command, InputPath, OutputPath, constraint_options, constraint_values

from hapi_onnx.search.constraints import CERTIFY_SHARE, SEARCH_SHARE
from hapi_onnx.search.design_search import EXACT_CANDIDATES, OPTIMISERS


@click.command("search", cls=Command)
@click.option("--trace", "trace_path", required=True, type=InputPath(), help="Trace .npz from calibrate.")
@click.option("--latency", "latency_path", required=True, type=InputPath(), help="Latency table .json from profile.")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False), help="Design .json to write.")
@constraint_options(defaults=True)
@click.option("--candidates", default=None,
              help="Comma-separated exits the search may keep (default: every exit of the trace).")
@click.option("--optimiser", type=click.Choice(OPTIMISERS), default="auto", show_default=True,
              help="fast: exact (up to 20 candidates); local: local search, any number; auto: fast up to "
              f"{EXACT_CANDIDATES} candidates, else local.")
@click.option("--plot", type=OutputPath(dir_okay=False), default=None,
              help="Also draw accuracy vs latency to this .png.")
@click.option("--ee", "ee_path", type=InputPath(), default=None,
              help="The early-exit model the trace was taken on: with --data, time the fused stages of the choice "
              "and its closest rivals on this device, choose again on them until the choice is stable, and "
              "predict from them (design.json marks each position's source: stages or pieces).")
@click.option("--data", "data_path", type=InputPath(), default=None,
              help="The calibration split (.npz or image folder) whose inputs --ee's stages are timed on.")
def command(trace_path, latency_path, output, plot, candidates, optimiser, ee_path, data_path, **options) -> None:
    """Choose exits and thresholds under a latency SLA and/or an accuracy floor.

    With only --latency-sla: the most accurate design within it. With --min-accuracy and/or
    --max-accuracy-drop (and optionally --latency-sla): the fastest design meeting all of them.
    At least one constraint is required.

    \b
    Guarantee (--guarantee split, the default): with probability at least --bound-level over the
    calibration data, the chosen design meets the accuracy floor on new data from the same
    distribution and its accuracy drop from the full model is at most --max-accuracy-drop: designs
    are searched on {search}% of the trace and certified on the other {certify}% along a path by
    fixed-sequence testing (Learn-then-Test), each design by an exact test of its
    losses (wrong where the full model is right) or of its net drop (losses minus gains), whichever
    bounds it tighter on the {search}%. With --reference final the trace may be unlabelled and a
    loss is any disagreement with the full model. The summary gives the price: the uncertified
    speed-up, and about how many calibration samples would halve the gap.

    Latency is predicted from the table's timed pieces; with --ee and --data it is predicted from the
    chosen design's own fused stages (and its closest rivals'), timed as the bundle runs them.

    Same as: hapi_onnx.search.search(Trace.load(TRACE), LatencyTable.load(LATENCY), Constraints(...),
    candidates=[...], optimiser=..., stages=StageTimer.from_files(EE, DATA, device))
    """
    from hapi_onnx.errors import HapiError
    from hapi_onnx.profile.table import LatencyTable
    from hapi_onnx.search import Constraints, search
    from hapi_onnx.search.report import front_lines, plot_front, summary_lines
    from hapi_onnx.search.stages import StageTimer
    from hapi_onnx.trace import Trace

    if (ee_path is None) != (data_path is None):
        raise HapiError("--ee and --data go together: the stages of --ee are timed on the inputs of --data.")
    constraints = Constraints(**constraint_values(options))
    names = None if candidates is None else [c.strip() for c in candidates.split(",") if c.strip()]
    table = LatencyTable.load(latency_path)
    stages = None if ee_path is None else StageTimer.from_files(ee_path, data_path, table.device)
    design = search(Trace.load(trace_path), table, constraints, candidates=names, optimiser=optimiser,
                    stages=stages)
    if plot:
        plot_front(design, plot)  # drawn first: a missing matplotlib leaves no design.json behind
    design.save(output)
    for line in summary_lines(design) + [""] + front_lines(design):
        click.echo(line)
    click.echo(f"wrote {output}")
    if plot:
        click.echo(f"wrote {plot}")


command.help = command.help.format(search=SEARCH_SHARE, certify=CERTIFY_SHARE)  # the code's split, not a copy
