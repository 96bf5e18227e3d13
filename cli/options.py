"""Option types and groups shared by the commands, so each rule is written once.

- :class:`InputPath` / :class:`OutputPath` mark a command's file parameters (:class:`DevicePath`:
  a preset name or file); :class:`Command` (every command's class) refuses, before the command
  runs, an output that resolves to one of its inputs or another output, or lies among them
  (:func:`hapi_onnx.files.check_outputs_apart`).
- :func:`preprocess_option` is the ``--preprocess`` spec of every command that reads images.
- :func:`constraint_options` adds the search constraints to ``search`` and ``build``, made from
  the field metadata of :class:`~hapi_onnx.search.constraints.Constraints` (flag, help, choices,
  default, old name); the flags renamed in 0.2 (``--confidence``, ``--thresholds``) still work,
  with a one-line note.
"""

import click
from hapi_onnx_cli import console

from hapi_onnx.files import check_outputs_apart


class InputPath(click.Path):
    """A path the command reads."""

    def input_path(self, value: str) -> str | None:
        """The file or folder ``value`` names, for the overlap check (None: it names none)."""
        return value


class BuildData(InputPath):
    """``mnist`` (the demo digits, no path) or a folder of the train/calib/test splits (an input)."""

    def input_path(self, value: str) -> str | None:
        return None if value == "mnist" else value


class DevicePath(InputPath):
    """A device preset: a shipped preset's name, or the path of a preset JSON file (an input)."""

    def __init__(self):
        super().__init__(dir_okay=False)

    def input_path(self, value: str) -> str | None:
        from hapi_onnx.profile.presets import available_presets

        return None if value in available_presets() else value


class OutputPath(click.Path):
    """A path the command writes."""


class Command(click.Command):
    """A hapi-onnx command: its outputs are checked against its inputs before it runs."""

    def invoke(self, ctx: click.Context):
        inputs, outputs = {}, {}
        for param in self.params:
            value = ctx.params.get(param.name)
            if value is None or not isinstance(param.type, (InputPath, OutputPath)):
                continue
            label = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            values = value if isinstance(value, tuple) else (value,)  # nargs=-1 or multiple=True: several
            for k, item in enumerate(values):
                name = label if len(values) == 1 else f"{label} #{k + 1}"
                if isinstance(param.type, InputPath):
                    inputs[name] = param.type.input_path(item)
                else:
                    outputs[name] = item
        check_outputs_apart(outputs, inputs)
        return super().invoke(ctx)


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
            self.fail(f"expected a fraction like 0.985 or a percentage like 98.5%. Got {value!r}.", param, ctx)
        fraction = number / 100.0 if percent or number > 1.0 else number
        if not 0.0 < fraction <= 1.0:
            self.fail(f"accuracy must be in (0, 1] or (0%, 100%]. Got {value!r}.", param, ctx)
        return fraction


def _deprecated(new: str):
    def note(ctx, param, value):
        if value is not None:
            console.log(f"warning: {param.opts[0]} is deprecated; use {new} instead.")
        return value

    return note


def constraint_options(defaults: bool):
    """The constraint flags of ``search`` (``defaults=True``: defaults shown) and ``build`` (none
    shown: a config file's values are not overridden), one per field of
    :class:`~hapi_onnx.search.constraints.Constraints`, made from its field metadata (flag, help,
    choices, old name); parameter names are the fields. No flag has a default of its own: a flag
    left out is ``None`` and :class:`Constraints` fills in its default."""
    from dataclasses import MISSING, fields

    from hapi_onnx.search.constraints import Constraints, flag

    options = []
    for field in fields(Constraints):
        meta = field.metadata
        kind = click.Choice(meta["choices"]) if meta["choices"] else AccuracyType() if meta["accuracy"] else float
        shown = defaults and field.default not in (None, MISSING)
        text = f"{meta['help']}  [default: {field.default}]" if shown else meta["help"]
        options.append(click.option(flag(field.name), field.name, type=kind, default=None, help=text))
        if meta["old"]:
            options.append(click.option(f"--{meta['old']}", meta["old"], type=kind, default=None, hidden=True,
                                        callback=_deprecated(flag(field.name))))

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def constraint_values(options: dict) -> dict:
    """The constraint fields from a command's parsed options (renamed flags mapped, ``None`` dropped).

    Removes the constraint flags from ``options`` in place.
    """
    from hapi_onnx.search.constraints import take_constraints

    return take_constraints(options)


def comma_names(value: str | None, option: str) -> list[str] | None:
    """``a, b,c`` as ``["a", "b", "c"]`` (None stays None).

    Raises:
        HapiError: when ``value`` names nothing (``""`` or ``",,"``).
    """
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        from hapi_onnx.errors import HapiError

        raise HapiError(f"{option} needs comma-separated tensor names. Got {value!r} instead; leave {option} "
                        "out to use every candidate.")
    return names


class InputShape(click.ParamType):
    """``N,C,H,W`` as four positive ints (``1,3,224,224`` or ``1x3x224x224``)."""

    name = "N,C,H,W"

    def convert(self, value, param, ctx):
        from hapi_onnx.graph.load import parse_input_shape

        return value if isinstance(value, tuple) else parse_input_shape(value)


PREPROCESS_HELP = (
    "How images become the model's input: a preset (none, imagenet, inception), a JSON object "
    "(e.g. '{\"preset\": \"imagenet\", \"resize\": 288}') or a JSON file. Applied to image folders; "
    "recorded, not applied, with .npz/.npy arrays (they are model input already)."
)


def parse_preprocess(ctx, param, value):
    """Click callback: the option's text as a :class:`~hapi_onnx.runtime.preprocess.Preprocessing` (or None)."""
    if value is None:
        return None
    from hapi_onnx.data import read_preprocessing

    return read_preprocessing(value)


def preprocess_option(default_help: str):
    """The ``--preprocess`` option (a parsed spec, or None); ``default_help`` says what applies without it."""
    return click.option("--preprocess", "preprocessing", default=None, metavar="PRESET|JSON|FILE",
                        callback=parse_preprocess, help=f"{PREPROCESS_HELP} {default_help}")
