"""The README is executable: every shell command in its code blocks runs as written.

Each command runs through bash with the project's venv on PATH, in a throwaway HOME (holding a
`~/my-writing` folder of the sample documents, which the tour imports) and a throwaway data dir, and must
exit 0. Two kinds are checked without running them to the end, and the reason is stated here:
`make test` is the command running this very test (it would recurse), and `make run` opens the window and
waits for the person. For those, `make -n TARGET` proves the target exists and its recipe resolves; the
real runs are CI itself and the app's own tests (tests/test_ui.py, the bundle's --self-test).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLES

NOT_RUN_TO_THE_END = {"make test", "make run"}


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"^```(?:sh|bash|shell|console)?\n(.*?)^```", text, flags=re.S | re.M)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmds.append(line)
    return cmds


def test_the_readme_has_commands():
    cmds = readme_commands()
    assert any(c.startswith("tailor ") for c in cmds) and any(c.startswith("make test") for c in cmds)


@pytest.mark.parametrize("cmd", readme_commands())
def test_readme_command_runs(cmd, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(SAMPLES / "packaging", home / "my-writing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    env.update(HOME=str(home), TAILOR_HOME=str(tmp_path / "data"), TAILOR_CONFIG=str(tmp_path / "config"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    words = shlex.split(cmd, comments=True)
    if " ".join(words[:2]) in NOT_RUN_TO_THE_END:
        cmd = f"make -n {words[1]}"
    elif words[0] == "tailor" and words[1] not in ("import", "info"):
        # the tour's commands follow its first import: the same data dir, as a person would have it
        subprocess.run(["tailor", "import", str(home / "my-writing")], env=env, cwd=REPO, check=True,
                       capture_output=True, timeout=600)
    r = subprocess.run(["bash", "-c", cmd], env=env, cwd=REPO, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=600)
    assert r.returncode == 0, f"{cmd!r} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
