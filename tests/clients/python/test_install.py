"""The SDK installs alone: its wheel, built from clients/python, ships only agentplatform_client (no file of the
server's `agentplatform` package, which gen/python ships), needs only grpcio, protobuf and googleapis-common-protos
(the REST annotations the stubs import), and works in a fresh virtualenv that holds nothing else (no network:
its dependencies, as clients/python/pyproject.toml lists them, and theirs are linked from this .venv)."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port

SDK_DIR = REPO_ROOT / "clients" / "python"
#: The SDK's run-time dependencies as its pyproject.toml declares them (no extras).
DEPENDENCIES: list[str] = tomllib.loads((SDK_DIR / "pyproject.toml").read_text())["project"]["dependencies"]

#: All an installed SDK may pull in: gRPC and protobuf (grpcio needs typing-extensions). googleapis-common-protos,
#: protobuf modules only, is allowed for stubs of protos that import google/api annotations (REST paths).
LIGHT = {"grpcio", "protobuf", "typing-extensions", "googleapis-common-protos"}


def distribution_name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]


def with_their_dependencies(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions of `names` and of everything they need (markers and extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = canonical(pending.pop())
        if name in found:
            continue
        found[name] = metadata.distribution(name)
        pending += [distribution_name(r) for r in found[name].requires or () if ";" not in r]
    return list(found.values())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def names_of(requirements: list[str]) -> list[str]:
    """The distributions requirements name, canonical and sorted (versions left out)."""
    return sorted(canonical(distribution_name(requirement)) for requirement in requirements)


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
    assert names_of(required) == names_of(DEPENDENCIES), required

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        check=True, timeout=120,
    )
    # grpcio and protobuf (and what they need) from this .venv, linked file by file into a folder of their own on
    # the fresh venv's path: nothing else of this .venv (the server, its other dependencies) is importable there.
    linked = tmp_path / "deps"
    ours = Path(sysconfig.get_paths()["purelib"])
    needed = with_their_dependencies([distribution_name(r) for r in DEPENDENCIES])
    assert {canonical(found.metadata["Name"]) for found in needed} <= LIGHT, "the SDK must stay a light install"
    for distribution in needed:
        for file in distribution.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts outside site-packages; bytecode
            (linked / file).parent.mkdir(parents=True, exist_ok=True)
            (linked / file).symlink_to(ours / file)
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
