"""The README's "Distill your own model" examples run as written, in order, in an empty folder."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def own_model_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Distill your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_the_section_has_python_and_command_line_examples_for_tabular_and_image_teachers():
    blocks = own_model_blocks()
    kinds = [kind for kind, _ in blocks]
    assert kinds.count("python") >= 2 and kinds.count("bash") >= 2
    code = "\n".join(body for _, body in blocks)
    assert "input_shape=(20,)" in code and "input_shape=(3, 32, 32)" in code
    assert "--teacher my_teacher.ts" in code and "--teacher-factory my_nets:small_cnn" in code


@pytest.mark.slow
def test_the_examples_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONWARNINGS": "ignore",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for i, (kind, body) in enumerate(own_model_blocks()):
        if kind == "python":
            script = tmp_path / f"example{i}.py"
            script.write_text(body)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-e", "-c", body]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"block {i} ({kind}) failed:\n{body}\n--- stderr ---\n{done.stderr[-3000:]}"
    for run in ("my-tabular", "my-tabular-cli", "my-images", "my-images-python"):
        assert (tmp_path / "runs" / run / "student.pt").is_file(), run
