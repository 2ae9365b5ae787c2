"""A new user's first mistakes: job-file values read as written, flags that would be ignored,
misspelled flags and commands. Each ends in one line `landscape: error: ...` and exit 2, checked
in-process (`landscape.cli.main`); no case gets as far as loading a model (its checkpoint is absent)."""
from dataclasses import asdict, fields

import pytest

from landscape.cli import main
from landscape.options import Job, TrainJob, build_job, plain_help, read_job_file

from conftest import run_surface


def surface(tmp_path, capsys, *args):
    """`landscape surface` with a missing checkpoint: (exit code, the non-empty stderr lines)."""
    code = main(["surface", "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress",
                 "--model_file", str(tmp_path / "absent.pt"), "--surf_file", str(tmp_path / "s.h5"), *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_job_file_unquoted_grid_specs_are_read_as_written(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("x: -1:1:51\ny: 0:1:11\nbatch_size: 64\n")  # YAML 1.1 reads -1:1:51 as base 60 (-3711)
    job = build_job(read_job_file(str(path)), str(path))
    assert (job.x, job.y, job.batch_size) == ("-1:1:51", "0:1:11", 64)


@pytest.mark.parametrize("text, args, words", [
    ("batch_size: 2.5\n", [], ["batch_size", "2.5"]),
    ("seed: 1.5\n", [], ["seed", "1.5"]),
    ("chunk: 0.5\n", [], ["chunk", "0.5"]),
    ("batch_size: true\n", [], ["batch_size", "True"]),
    ("plot: 1\n", [], ["plot", "1"]),  # refused even where --no-plot overrides it
    ("", ["--batch_size", "2.5"], ["batch_size", "2.5"]),
], ids=["yaml-batch-size", "yaml-seed", "yaml-chunk", "yaml-bool-as-int", "yaml-int-as-bool", "flag-batch-size"])
def test_integer_option_refuses_a_fraction(tmp_path, capsys, text, args, words):
    (tmp_path / "job.yaml").write_text(text or "{}\n")
    code, lines = surface(tmp_path, capsys, "--config", str(tmp_path / "job.yaml"), *args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("landscape: error:"), lines
    assert all(w in lines[0] for w in words), lines[0]


IGNORED = {  # id: (arguments, words of the one error line); {dir}: the test's folder
    "data-dir-with-digits": (["--data_dir", "{dir}"], ["--data_dir", "cifar10"]),
    "data-dir-with-own-factory": (["--dataset", "pkg.mod:data", "--data_dir", "{dir}"], ["--data_dir", "cifar10"]),
    "ynorm-without-y": (["--ynorm", "layer"], ["--ynorm", "--y"]),
    "yignore-without-y": (["--yignore", "none"], ["--yignore", "--y"]),
    "ynorm-in-job-file-without-y": (["--config", "{dir}/ynorm.yaml"], ["--ynorm", "--y"]),
    "xnorm-with-dir-file": (["--dir_file", "{dir}/d.h5", "--xnorm", "layer"], ["--xnorm", "--dir_file"]),
    "xignore-with-dir-file": (["--dir_file", "{dir}/d.h5", "--xignore", "none"], ["--xignore", "--dir_file"]),
    "seed-with-dir-file": (["--dir_file", "{dir}/d.h5", "--seed", "3"], ["--seed", "--dir_file", "--model_file"]),
    "xnorm-with-trajectory": (["--trajectory", "{dir}/c_*.pt", "--xnorm", "layer"], ["--xnorm", "--trajectory"]),
    "yignore-with-trajectory": (["--trajectory", "{dir}/c_*.pt", "--y=-1:1:3", "--yignore", "none"],
                                ["--yignore", "--trajectory"]),
    "seed-with-trajectory": (["--trajectory", "{dir}/c_*.pt", "--seed", "3"], ["--seed", "--trajectory"]),
    "xnorm-with-line": (["--model_file2", "{dir}/b.pt", "--xnorm", "layer"], ["--xnorm", "--model_file2"]),
    "seed-with-line": (["--model_file2", "{dir}/b.pt", "--seed", "3"], ["--seed", "--model_file2"]),
    "ynorm-with-plane": (["--model_file2", "{dir}/b.pt", "--model_file3", "{dir}/c.pt", "--y=0:1:2", "--ynorm",
                          "layer"], ["--ynorm", "θ₃ − θ₁"]),
    "xnorm-with-line-random-y-and-ynorm": (["--model_file2", "{dir}/b.pt", "--y=0:1:2", "--ynorm", "layer",
                                            "--xnorm", "weight"], ["--xnorm", "--model_file2"]),
}


@pytest.mark.parametrize("case", list(IGNORED))
def test_flag_that_would_be_ignored_is_refused(tmp_path, capsys, case):
    (tmp_path / "ynorm.yaml").write_text("ynorm: filter\n")
    args, words = IGNORED[case]
    code, lines = surface(tmp_path, capsys, *[a.replace("{dir}", str(tmp_path)) for a in args])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("landscape: error:"), lines
    assert all(w in lines[0] for w in words) and "leave out" in lines[0], lines[0]
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("values", [
    {"model_file": "a.pt", "model_file2": "b.pt", "y": "0:1:2", "seed": 3, "ynorm": "layer", "yignore": "none"},
    {"model_file": "a.pt", "model_file2": "b.pt", "y": "0:1:2", "xnorm": "layer", "xignore": "none"},
    {"model_file": "a.pt", "trajectory": "c_*.pt", "xignore": "none"},
    {"trajectory": "c_*.pt", "seed": 3},  # the seed initializes the model
    {"dir_file": "d.h5", "seed": 3, "xnorm": "filter", "xignore": "biasbn"},  # defaults as given
    {"dataset": "cifar10", "data_dir": "data"},
    {"y": "0:1:2", "ynorm": "layer", "yignore": "none", "seed": 3},
    asdict(Job(model_file="a.pt", trajectory="c_*.pt")),  # a stored config: every key, nulls included
    asdict(Job(model_file="a.pt", dir_file="d.h5", y="0:1:2")),
], ids=["line-random-y", "line-random-y-from-x-options", "trajectory-xignore", "seed-initializes-model",
        "dir-file-defaults", "cifar10-data-dir", "random-2d", "stored-trajectory", "stored-dir-file"])
def test_flags_that_are_used_are_accepted(values):
    build_job(values)


def test_misspelled_flag_is_one_line_with_a_suggestion(capsys):
    assert main(["surface", "--xnrom", "filter"]) == 2
    assert capsys.readouterr().err == "landscape: error: unknown flag --xnrom: did you mean --xnorm?\n"


def test_misspelled_flag_of_plot_surface_py_is_one_line_with_a_suggestion():
    proc = run_surface(["--xnrom", "filter"], check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "landscape: error: unknown flag --xnrom: did you mean --xnorm?\n"


def test_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert main(["surfce"]) == 2
    assert capsys.readouterr().err == "landscape: error: unknown command 'surfce': did you mean 'surface'?\n"


@pytest.mark.parametrize("argv, words", [
    (["hessian", "s.h5", "--stride", "abc"], ["--stride", "'abc'", "landscape hessian --help"]),
    (["hessian"], ["surf_file"]),
    (["import-directions", "ref.h5", "--out", "d.h5"], ["--model"]),
    (["surface", "--x"], ["--x", "expected one argument"]),
    (["info", "a.h5", "b.h5"], ["b.h5"]),
    ([], ["command"]),
], ids=["bad-int", "missing-file", "missing-flag", "missing-value", "extra-argument", "no-command"])
def test_other_argument_errors_are_one_line(capsys, argv, words):
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error:"), lines
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["surface", "--help"], ["hessian", "-h"]])
def test_help_still_exits_0(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage: landscape" in capsys.readouterr().out


def test_train_help_explains_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for f in fields(TrainJob):
        assert f"--{f.name}" in out and f"{plain_help(f)} (default: {f.default})" in out, f.name

