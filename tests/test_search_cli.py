"""CLI: ``hapi-onnx search`` prints the design and the front, writes design.json, exits 2 on errors."""

import pytest
from click.testing import CliRunner
from hapi_onnx_cli.main import cli

from hapi_onnx.search import Design
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    synthetic_trace(5, 2000, seed=31, decimals=3).save(folder / "trace.npz")
    synthetic_table(5, seed=31).save(folder / "latency.json")
    return folder


def run(files, *extra):
    args = [
        "search",
        "--trace",
        str(files / "trace.npz"),
        "--latency",
        str(files / "latency.json"),
        "-o",
        str(files / "design.json"),
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def test_search_prints_design_and_front_and_writes_it(files):
    (files / "design.json").unlink(missing_ok=True)
    result = run(files, "--max-accuracy-drop", "4", "--percentile", "p90", "--plot", str(files / "front.png"))
    assert result.exit_code == 0, result.output
    design = Design.load(files / "design.json")
    first = design.exits[0]
    assert f"design: {first.name} (t={first.threshold:.4f})" in result.output
    assert "speed-up" in result.output and "exit distribution:" in result.output
    assert "Pareto front, accuracy vs p90 latency" in result.output and "\n*" in result.output
    assert (files / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bound_level_option_reaches_the_design_and_the_output(files):
    result = run(files, "--max-accuracy-drop", "4")
    assert result.exit_code == 0, result.output
    design = Design.load(files / "design.json")
    assert design.constraints.bound_level == 0.9 and design.constraints.guarantee == "split"
    bound = design.predicted["accuracy_drop_bound_pp"]
    what = {"loss": "loss rate", "net": "drop"}[design.search["guarantee"]["test"]]
    assert f"{what} <= {bound:.2f} pp; certified at level 0.9)" in result.output
    assert "guarantee: with probability >= 0.9 over the calibration data" in result.output
    assert design.search["guarantee"]["certify_samples"] == 1400
    per_design = run(files, "--max-accuracy-drop", "3", "--guarantee", "per-design")
    assert per_design.exit_code == 0, per_design.output
    bound = Design.load(files / "design.json").predicted["accuracy_drop_bound_pp"]
    assert f"<= {bound:.2f} pp; 90%-level bounds" in per_design.output
    assert "drop <=" in result.output and " no " in result.output  # the front marks refused points
    raw = run(files, "--max-accuracy-drop", "3", "--bound-level", "0")
    assert raw.exit_code == 0, raw.output
    assert Design.load(files / "design.json").constraints.bound_level == 0
    assert "level bounds" not in raw.output and "certified" not in raw.output
    bad = run(files, "--max-accuracy-drop", "3", "--bound-level", "1.5")
    assert bad.exit_code == 2 and bad.output.startswith("error: The constraint 'bound_level' must be")
    assert len(bad.output.strip().splitlines()) == 1


def test_renamed_flags_still_work_with_a_note(files):
    result = CliRunner().invoke(cli, ["--verbose", "search", "--trace", str(files / "trace.npz"), "--latency",
                                      str(files / "latency.json"), "-o", str(files / "design.json"),
                                      "--max-accuracy-drop", "3", "--confidence", "0.95", "--thresholds", "per-exit"])
    assert result.exit_code == 0, result.output
    design = Design.load(files / "design.json")
    assert design.constraints.bound_level == 0.95 and design.constraints.space == "per-exit"
    assert "warning: --confidence is deprecated; use --bound-level instead." in result.output
    assert "warning: --thresholds is deprecated; use --space instead." in result.output


@pytest.mark.parametrize("text,fraction", [("0.9", 0.9), ("90", 0.9), ("90%", 0.9), ("1", 1.0), ("1%", 0.01)])
def test_min_accuracy_accepts_fractions_and_percentages(files, text, fraction):
    result = run(files, "--min-accuracy", text, "--latency-sla", "50")
    if fraction < 0.95:  # any design reaches these: the floor must be read as written
        assert result.exit_code == 0, result.output
        assert Design.load(files / "design.json").constraints.min_accuracy == pytest.approx(fraction)
    elif result.exit_code == 0:
        assert Design.load(files / "design.json").constraints.min_accuracy == pytest.approx(fraction)
    else:  # only a floor no design reaches may fail, and then with one clear line
        assert result.exit_code == 2 and "no design reaches" in result.output


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "at least one constraint"),
        (["--latency-sla", "0.0001"], "no design meets mean latency"),
        (["--min-accuracy", "1.0"], "no design reaches 100.00% accuracy"),
    ],
)
def test_user_errors_exit_2_with_one_line(files, extra, message):
    result = run(files, *extra)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_inputs_exit_2(files, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "--trace",
            str(tmp_path / "missing.npz"),
            "--latency",
            str(files / "latency.json"),
            "-o",
            str(tmp_path / "d.json"),
            "--latency-sla",
            "1",
        ],
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    other = tmp_path / "other.json"
    synthetic_table(5, seed=31, model_fingerprint="0" * 64).save(other)
    result = CliRunner().invoke(
        cli,
        [
            "search",
            "--trace",
            str(files / "trace.npz"),
            "--latency",
            str(other),
            "-o",
            str(tmp_path / "d.json"),
            "--latency-sla",
            "1",
        ],
    )
    assert result.exit_code == 2 and "different models" in result.output
    assert not (tmp_path / "d.json").exists()
    result = run(files, "--min-accuracy", "150")
    assert result.exit_code == 2 and "accuracy must be in (0, 1]" in result.output
