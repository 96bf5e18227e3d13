"""The ``hapi-onnx`` root group.

Commands are imported only when invoked, so ``hapi-onnx --help`` stays fast and imports no
optional extra. A mistake a user can make, a :class:`~hapi_onnx.errors.HapiError` or a usage
error (bad flag, bad value, missing file), becomes one ``error: <message>`` line on stderr and
exit status 2; anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and SIGTERM
with 143, after every temporary output has been removed.
"""

import importlib
import signal
import sys

import click
from hapi_onnx_cli import console

from hapi_onnx import __version__
from hapi_onnx.errors import HapiError
from hapi_onnx.files import DISK_FULL

# name -> (module in hapi_onnx_cli, short help), in the order of the workflow.
COMMANDS = {
    "data": ("data_cmd", "Write the demo MNIST splits (train/calib/test .npz)."),
    "export": ("export_cmd", "Convert a PyTorch or ONNX CNN to a verified ONNX model."),
    "exits": ("exits_cmd", "List the candidate exits (single-tensor cut points) of a model."),
    "split": ("split_cmd", "Split a model into segments at cut tensors."),
    "attach": ("attach_cmd", "Fit exit heads on the frozen backbone and graft them in."),
    "calibrate": ("calibrate_cmd", "Record every exit's predictions on calibration data, labelled or not (the trace)."),
    "profile": ("profile_cmd", "Time every segment and head on a device preset."),
    "search": ("search_cmd", "Choose exits and thresholds under latency/accuracy constraints."),
    "bundle": ("bundle_cmd", "Package a design as a staged early-exit bundle."),
    "run": ("run_cmd", "Classify images (files or a folder) or a .npy/.npz with a bundle."),
    "evaluate": ("evaluate_cmd", "Measure a bundle's accuracy and latency against the full model."),
    "build": ("build_cmd", "Run the whole flow, export to evaluate, in a work directory."),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in their own modules, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"hapi_onnx_cli.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, so --help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # past click's handler, which would add a blank line
            raise Stopped("interrupted.", 130) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the command; in standalone mode every user error ends as one line and status 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:  # --help, --version
            sys.exit(done.exit_code)
        except click.Abort:
            fail("interrupted.", 130)
        except Stopped as stop:
            fail(stop.message, stop.status)
        except click.ClickException as err:  # usage errors: bad flags, values, paths
            fail(err.format_message(), 2)
        except HapiError as err:
            fail(str(err), 2)
        except OSError as err:  # a full disk where no output names it (ORT, a library's own write)
            if err.errno not in DISK_FULL:
                raise
            where = f" writing {err.filename!r}" if err.filename else ""
            fail(f"{err.strerror}{where}; free some space and run it again (no output was written).", 2)
        sys.exit(0)


class Stopped(BaseException):
    """Ctrl-C or SIGTERM: raised in the main thread, so every ``finally`` and atomic output cleans
    up on the way out; ends as one ``error:`` line and ``status``."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Stopped("terminated.", 128 + signal.SIGTERM)


def fail(message: str, status: int) -> None:
    """Print ``error: <message>`` as one line on stderr (a live progress line cleared first) and exit."""
    console.clear()
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(status)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hapi-onnx")
@click.option("-v", "--verbose", is_flag=True, help="Progress and logs on stderr even when it is not a terminal.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or logs on stderr.")
def cli(verbose: bool, quiet: bool) -> None:
    """hapi-onnx: hardware-aware early-exit CNNs on ONNX Runtime (HAPI).

    \b
    Typical flow:
      hapi-onnx attach model.onnx --data train.npz -o ee.onnx
      hapi-onnx calibrate ee.onnx --data calib.npz -o trace.npz
      hapi-onnx profile ee.onnx --device cpu-1t -o latency.json
      hapi-onnx search --trace trace.npz --latency latency.json --max-accuracy-drop 0.5 -o design.json
      hapi-onnx bundle ee.onnx --design design.json -o model.hapi
      hapi-onnx evaluate model.hapi --data test.npz
    or all of it at once with `hapi-onnx build`.

    Progress and logs go to stderr when it is a terminal (see --verbose, --quiet); results to
    stdout; a mistake ends in one `error:` line and exit status 2.
    """
    console.set_mode("quiet" if quiet else "verbose" if verbose else "auto")


def main() -> None:
    """Console-script entry point: SIGTERM ends the command like Ctrl-C, temporary files removed."""
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="hapi-onnx")
