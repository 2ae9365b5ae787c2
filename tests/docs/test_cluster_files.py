"""Job scripts and the README's configuration reference agree with the CLI."""
import re
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from landscape.cli.main import parser
from landscape.options import Job

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "jobs" / "slurm").glob("*.sbatch")) + sorted((ROOT / "scripts").glob("*.sh"))


def surface_flags() -> set[str]:
    """Every option `landscape surface` accepts (both forms of --x/--no-x switches)."""
    sub = next(a for a in parser()._actions if a.dest == "command").choices["surface"]
    return {s for a in sub._actions for s in a.option_strings}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash_and_uses_only_known_flags(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    known = surface_flags()
    for line in text.splitlines():
        if "plot_surface.py" not in line and "landscape surface" not in line:
            continue
        # the landscape command and its continuation lines
        start = text.index(line)
        command = re.split(r"(?<!\\)\n", text[start:], maxsplit=1)[0]
        for flag in re.findall(r"(?<![\w-])(--[a-z_0-9-]+)", command.split("plot_surface.py", 1)[-1]):
            assert flag in known, f"{script.name} passes {flag}, which landscape surface does not accept"


def test_readme_configuration_reference_lists_exactly_the_cli_options():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Configuration reference", 1)[1].split("\n## ", 1)[0]
    first_column = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `--")]
    documented = {f for cell in first_column for f in re.findall(r"--[a-z_0-9-]+", cell)}
    documented = {f for f in documented if not f.startswith("--no-")}
    cli = {f for f in surface_flags() if not f.startswith("--no-")} - {"-h", "--help"}
    assert documented == cli, f"README only: {sorted(documented - cli)}; CLI only: {sorted(cli - documented)}"
    assert cli == {f"--{f.name}" for f in fields(Job)} | {"--config"}


def test_readme_configuration_reference_is_generated_from_the_options():
    """The table is options.reference_table() verbatim: one source for flags, help and README."""
    from landscape.options import reference_table

    readme = (ROOT / "README.md").read_text()
    assert reference_table() in readme, "regenerate it: python -c 'from landscape.options import reference_table as t; print(t())'"


def test_dockerfile_passes_hadolint_and_uses_the_setup_script():
    hadolint = Path(__import__("sys").executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint not installed (scripts/setup.sh installs it)")
    proc = subprocess.run([str(hadolint), str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one source of truth for the install steps: the image runs the tested set-up script
    assert "bash scripts/setup.sh" in (ROOT / "docker" / "Dockerfile").read_text()
