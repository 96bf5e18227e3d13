"""``hapi-onnx build``: the whole flow in a work directory, resumable."""

import click

from hapi_onnx.errors import HapiError
from hapi_onnx.pipeline import PERCENTILES, BuildConfig, build, build_report


def _csv(ctx, param, value):
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@click.command("build")
@click.argument("model", required=False)
@click.option("--config", "config_file", type=click.Path(), help="JSON file with any of the options below.")
@click.option("--workdir", default="work", show_default=True, help="Where every step writes its output.")
@click.option("--factory", help="PyTorch model factory, file.py:name or module:name (MODEL is a state dict).")
@click.option("--input-shape", callback=lambda c, p, v: None if v is None else [int(d) for d in v.split(",")],
              help="N,C,H,W for a PyTorch export, e.g. 1,1,28,28.")
@click.option("--data", help="'mnist' (demo digits) or a folder with train.npz, calib.npz, test.npz.")
@click.option("--device", help="Device preset name or file. [default: cpu-1t]")
@click.option("--latency-sla", "latency_sla_ms", type=float, help="Latency constraint in ms.")
@click.option("--percentile", type=click.Choice(PERCENTILES), help="Statistic the SLA applies to. [default: mean]")
@click.option("--min-accuracy", type=float, help="Accuracy floor, a fraction (0.98).")
@click.option("--max-accuracy-drop", type=float, help="Largest accuracy drop vs the full model, in points.")
@click.option("--thresholds", type=click.Choice(["global", "per-exit"]), help="[default: global]")
@click.option("--confidence", type=float,
              help="Accuracy constraints hold at this one-sided confidence (0 = raw counts). [default: 0.9]")
@click.option("--exits", callback=_csv, help="Comma-separated candidate tensors (default: all candidates).")
@click.option("--max-candidates", type=int, help="Thin the candidates to this many.")
@click.option("--profile-budget", "profile_budget_s", type=float, help="Seconds of timed runs per piece.")
def command(config_file, workdir, **options):
    """Export, attach, calibrate, profile, search, bundle and evaluate, in WORKDIR.

    Each step's output is reused while its inputs are unchanged: an interrupted build resumes
    where it stopped, and a changed SLA re-runs only search onward. MODEL is an .onnx file, or a
    PyTorch state dict with --factory and --input-shape. Flags override the config file.
    """
    if config_file:
        config = BuildConfig.from_file(config_file, **options)
    elif options["model"] is None:
        raise HapiError("give the MODEL to build from, or a --config file (see `hapi-onnx build --help`).")
    else:
        config = BuildConfig(**{k: v for k, v in options.items() if v is not None})
    result = build(config, workdir, log=lambda line: click.echo(line, err=True))
    click.echo("\n".join(build_report(result)))
