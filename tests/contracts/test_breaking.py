"""`make proto-breaking` guards the released contract: the protos pass it, and a change that would break a
client (here a renumbered field of Run) fails it."""

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


def buf_breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", "api-baseline.binpb"],
        cwd=protos, capture_output=True, text=True, timeout=120,
    )


def test_the_protos_keep_the_released_contract() -> None:
    result = buf_breaking(REPO_ROOT / "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renumbered_field_breaks_the_contract(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(REPO_ROOT / "protos", protos)
    runs = protos / "agentplatform" / "runs" / "v1" / "runs.proto"
    text = runs.read_text()
    assert "  string user_query = 2;\n" in text
    runs.write_text(text.replace("  string user_query = 2;\n", "  string user_query = 99;\n", 1))
    result = buf_breaking(protos)
    assert result.returncode != 0
    assert "user_query" in result.stdout + result.stderr
