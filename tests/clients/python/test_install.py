"""The SDK installs alone: its wheel, built from clients/python, ships only agentplatform_client (no file of the
server's `agentplatform` package, which gen/python ships), needs only grpcio and protobuf, and works in a fresh
virtualenv that holds nothing else (no network: the two dependencies are linked from this .venv)."""

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port

SDK_DIR = REPO_ROOT / "clients" / "python"
#: What the SDK may need at run time, as (import names, distribution names), and grpcio's own dependency.
DEPENDENCIES = (("grpc", "grpcio"), ("google/protobuf", "protobuf"), ("google/_upb", None),
                ("typing_extensions.py", "typing_extensions"))

pytestmark = pytest.mark.timeout(180)


def test_the_sdk_wheel_installs_and_works_in_a_fresh_venv_with_grpcio_and_protobuf_only(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ beside the sources.
    source = tmp_path / "source"
    shutil.copytree(SDK_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(wheels), str(source)],
        check=True, timeout=120,
    )
    (wheel,) = wheels.glob("agentplatform_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(name).decode() for name in names if name.endswith(".dist-info/METADATA"))
    tops = {name.split("/")[0] for name in names}
    assert tops == {"agentplatform_client", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "agentplatform_client/_proto/agentplatform/runs/v1/runs_pb2.py" in names
    assert not [name for name in names if "/internal/" in name], "the internal APIs are not the SDK's"
    required = sorted(line.split(":", 1)[1].strip() for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert required == ["grpcio>=1.85.1", "protobuf<8,>=7.36.2"], required

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        check=True, timeout=120,
    )
    # grpcio and protobuf (and grpcio's typing_extensions) from this .venv, linked into a folder of their own on
    # the fresh venv's path: nothing else of this .venv (the server, its other dependencies) is importable there.
    linked = tmp_path / "deps"
    ours = Path(sysconfig.get_paths()["purelib"])
    for path, distribution in DEPENDENCIES:
        (linked / path).parent.mkdir(parents=True, exist_ok=True)
        (linked / path).symlink_to(ours / path)
        if distribution is not None:
            (info,) = [found for found in ours.glob(f"{distribution}-*.dist-info")]
            (linked / info.name).symlink_to(info)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(f"{linked}\n")
    checked = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Imported there, the SDK answers a call to a gateway that is not there with its typed error, at once.
    program = f"""
import importlib.util, json
from agentplatform_client import Client, errors
from agentplatform_client.types import Run
with Client("127.0.0.1:{free_port()}", timeout=2) as client:
    try:
        client.get_run("x")
    except errors.Unavailable as error:
        code = error.code.name
print(json.dumps({{"server": importlib.util.find_spec("agentplatform") is not None, "code": code,
                  "run": Run(id="r").id, "module": Client.__module__}}))
"""
    result = subprocess.run([str(python), "-c", program], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"server": False, "code": "UNAVAILABLE", "run": "r",
                                         "module": "agentplatform_client.sync"}
