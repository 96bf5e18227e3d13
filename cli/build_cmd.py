"""``hapi-onnx build``: the whole flow in a work directory, resumable."""

import click
from hapi_onnx_cli import console
from hapi_onnx_cli.options import (
    BuildData,
    Command,
    DevicePath,
    InputPath,
    InputShape,
    OutputPath,
    comma_names,
    constraint_options,
    constraint_values,
)

from hapi_onnx.errors import HapiError
from hapi_onnx.lazy import lazy_import
from hapi_onnx.pipeline import BuildConfig, build, build_report, plot_build


@click.command("build", cls=Command)
@click.argument("model", nargs=-1, type=InputPath())
@click.option("--config", "config_file", type=InputPath(dir_okay=False),
              help="JSON file with any of the options below but --workdir (same names, - or _; the units may be "
              "spelled out: latency_sla_ms, profile_budget_s).")
@click.option("--workdir", default="work", show_default=True, type=OutputPath(file_okay=False),
              help="Where every step writes its output.")
@click.option("--factory", help="PyTorch model factory, file.py:name or module:name (MODEL is a state dict).")
@click.option("--input-shape", type=InputShape(), help="N,C,H,W for a PyTorch export, e.g. 1,1,28,28.")
@click.option("--data", type=BuildData(), help="'mnist' (demo digits) or a folder with the splits train, calib, "
              "test: each an .npz or a folder of class subfolders of images.")
@click.option("--device", type=DevicePath(), metavar="NAME|PATH", help="Device preset name or file. [default: cpu-1t]")
@constraint_options(defaults=False)
@click.option("--exits", help="Comma-separated candidate tensors (default: all candidates).")
@click.option("--max-candidates", type=click.IntRange(min=1), help="Thin the candidates to this many.")
@click.option("--profile-budget", "profile_budget_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds of timed runs per piece.")
@click.option("--preprocess", metavar="PRESET|JSON|FILE",
              help="How images become the model's input: none, imagenet, inception, a JSON object or file. "
              "Applied to image folders, recorded with arrays. [default: none]")
@click.option("--plot", type=OutputPath(dir_okay=False), default=None,
              help="Also draw the Pareto front (with several models: the joint front, by model) to this .png.")
@click.option("--time-stages/--no-time-stages", "time_stages", default=None,
              help="Time the chosen design's fused stages (and its closest rivals') as the bundle runs them, choose "
              "again on them and predict from them, or predict from the profiled pieces alone. [default: time]")
def command(config_file, workdir, plot, **options):
    """Export, attach, calibrate, profile, search, bundle and evaluate, in WORKDIR.

    Each step's output is reused while its inputs are unchanged: an interrupted build resumes
    where it stopped, and a changed SLA re-runs only search onward. MODEL is an .onnx file, or a
    PyTorch state dict with --factory and --input-shape. Flags override the config file. Every
    option is checked before the first step runs, and an accuracy floor no design can reach stops
    the build right after calibrate, before profiling.

    \b
    Several MODELs (.onnx files for the same classes and data): each is exported, attached,
    calibrated and profiled on its own (in WORKDIR/models/; adding a model re-runs only its steps
    and the search), then ONE design space is searched: every design of every model, the full
    models included. The output is the joint Pareto front labelled by model, each model's best
    design under the constraints (or why none), and the chosen model's bundle, evaluated next to
    every full model. Constraints: --min-accuracy and --latency-sla (a drop budget is relative to
    one full model, so it is refused; give a floor instead). With a certified floor, the model is
    chosen on the search part of the calibration data and only its designs are certified on the
    rest, so the guarantee holds for the whole selection. (The early stop for an unreachable floor
    is per model only in a plain build: of several, another model may reach it.)

    Same as: hapi_onnx.pipeline.build(BuildConfig.from_options({...}), WORKDIR)
    """
    values = {**constraint_values(options), **options}
    values["model"] = list(values["model"]) or None
    values["exits"] = comma_names(values["exits"], "--exits")
    if config_file:
        config = BuildConfig.from_file(config_file, note=console.log, **values)
    elif values["model"] is None:
        raise HapiError("give the MODEL to build from, or a --config file (see `hapi-onnx build --help`).")
    else:
        config = BuildConfig.from_options(values, note=console.log)
    if plot:
        lazy_import("matplotlib", "plot")  # missing: refused before any step runs
    result = build(config, workdir, log=console.log)
    click.echo("\n".join(build_report(result)))
    if plot:
        plot_build(result, plot)
        click.echo(f"wrote {plot}")
