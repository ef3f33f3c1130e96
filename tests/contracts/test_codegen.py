"""The checked-in stubs are what protos/ generates, and `make proto-check` notices when they are not."""

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def proto_check(gen_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "proto-check", f"GEN_DIR={gen_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def test_checked_in_stubs_match_the_protos() -> None:
    result = proto_check(REPO_ROOT / "gen" / "python")
    assert result.returncode == 0, result.stdout + result.stderr


def test_proto_check_fails_on_stale_stubs(tmp_path: Path) -> None:
    stale = tmp_path / "python"
    shutil.copytree(REPO_ROOT / "gen" / "python", stale)
    stub = stale / "agentplatform" / "runs" / "v1" / "runs_pb2.pyi"
    stub.write_text(stub.read_text().replace("class Run(", "class RunRenamed(", 1))
    result = proto_check(stale)
    assert result.returncode != 0
    assert "make proto" in result.stdout + result.stderr
