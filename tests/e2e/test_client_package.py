"""The TypeScript client as a user gets it (issue 20): `npm pack` of clients/web (its prepack builds dist/ and
copies the LICENSE in), the tarball installed into a scratch project outside the repository, and the quick start
of clients/web/README.md, as written there, type-checked against the installed package with tsc and run with Node
against the stack `make run` starts.

Offline: the tarball is installed with `npm install --offline`, its three runtime dependencies from the
repository's own node_modules (npm links them and takes them as satisfying the tarball's pinned versions), so the
test needs no registry. Skips when node/npm or the npm packages are missing, unless REQUIRE_BROWSER=1 (CI sets it).
"""

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

CLIENT_DIR = REPO_ROOT / "clients" / "web"
NODE_MODULES = REPO_ROOT / "node_modules"
TSC = NODE_MODULES / ".bin" / "tsc"
#: What the README's quick start points at; the test points it at its own stack's gateway instead.
README_GATEWAY = "http://127.0.0.1:8080"
#: A consumer's compiler settings: the strictest usual ones, Node's ES modules, and no skipLibCheck, so the
#: package's own .d.ts files are checked too. No @types/node: the quick start needs only what Node and browsers
#: share (fetch, console).
CONSUMER_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM", "DOM.Iterable"],
        "strict": True,
        "skipLibCheck": False,
        "noEmitOnError": True,
    },
    "include": ["*.mts"],
}
NPM_TIMEOUT = 120


@dataclass
class Packed:
    tarball: Path
    files: set[str]
    manifest: dict[str, Any]


def missing_tools() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    for needed in (TSC, NODE_MODULES / "@bufbuild" / "protobuf", NODE_MODULES / "@connectrpc" / "connect-web"):
        if not needed.exists():
            return f"{needed} is missing (npm ci)"
    return None


def npm(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT,
    )
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def readme_quick_start() -> str:
    """The first TypeScript block under the README's "Quick start" heading, as written."""
    readme = (CLIENT_DIR / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```ts\n(.*?)```", section, re.DOTALL)
    assert match, "clients/web/README.md has no ```ts block under its Quick start"
    return match.group(1)


def tsc(project: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TSC), "-p", str(project / "tsconfig.json"), *options], capture_output=True, text=True, timeout=NPM_TIMEOUT
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    reason = missing_tools()
    if reason is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    destination = tmp_path_factory.mktemp("pack")
    (report,) = json.loads(npm("pack", "--json", "--pack-destination", str(destination), cwd=CLIENT_DIR))
    tarball = destination / report["filename"]
    manifest = json.loads((CLIENT_DIR / "package.json").read_text())
    return Packed(tarball, {entry["path"] for entry in report["files"]}, manifest)


@pytest.fixture(scope="module")
def scratch(packed: Packed, tmp_path_factory: pytest.TempPathFactory, platform_stack: RunningStack) -> Path:
    """A project outside the repository with the tarball installed and the README's quick start in it."""
    project = tmp_path_factory.mktemp("consumer")
    (project / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "type": "module"}))
    runtimes = [str(NODE_MODULES / name) for name in packed.manifest["dependencies"]]
    npm("install", "--offline", *runtimes, str(packed.tarball), cwd=project)
    (project / "tsconfig.json").write_text(json.dumps(CONSUMER_TSCONFIG))
    quick_start = readme_quick_start()
    assert README_GATEWAY in quick_start
    (project / "quickstart.mts").write_text(quick_start.replace(README_GATEWAY, platform_stack.stack.gateway_url))
    return project


def test_the_tarball_is_publishable_and_holds_what_its_exports_name(packed: Packed) -> None:
    manifest = packed.manifest
    assert "private" not in manifest
    assert manifest["license"] == "Apache-2.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert packed.tarball.name == f"agentplatform-client-{manifest['version']}.tgz"
    assert manifest["repository"]["directory"] == "clients/web"
    assert "LICENSE" in packed.files and "README.md" in packed.files
    assert "Apache License" in (REPO_ROOT / "LICENSE").read_text()
    # Every file the exports and the legacy fields name is in the tarball (built by prepack, not left over).
    named = [manifest["main"], manifest["types"], *manifest["exports"]["."].values()]
    assert {"types", "import"} <= manifest["exports"]["."].keys()
    for path in named:
        assert path.removeprefix("./") in packed.files, path
    # Nothing of the repository but the package: no tests, no tsconfig, no generator config.
    assert not any(path.startswith(("tests", "node_modules")) or path.endswith(".yaml") for path in packed.files)


def test_the_readme_quick_start_type_checks_against_the_installed_package_and_runs(
    scratch: Path, platform_stack: RunningStack
) -> None:
    installed = scratch / "node_modules" / "@agentplatform" / "client"
    assert not installed.is_symlink(), "the package must come from the tarball, not linked from the repository"
    compiled = tsc(scratch)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    result = subprocess.run(
        ["node", "quickstart.mjs"], cwd=scratch, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("tools: ") and "calculator" in lines[0], lines
    # The seed's worked example: two calculator calls, then the answer; the run's final state last.
    assert sum("calls calculator" in line for line in lines) == 2, lines
    assert any(re.search(r"answer: .*45", line) for line in lines), lines
    assert re.fullmatch(r"run [0-9a-f-]+: COMPLETED", lines[-1]), lines


def test_a_program_that_misuses_the_api_does_not_type_check(scratch: Path) -> None:
    """The types come from the package's .d.ts files: a wrong use is an error, not an `any` that passes."""
    (scratch / "misuse.mts").write_text(
        'import { RunState, createPlatformClients, createPlatformTransport } from "@agentplatform/client";\n'
        'const clients = createPlatformClients(createPlatformTransport({ baseUrl: "http://127.0.0.1:1" }));\n'
        "const run = await clients.runs.getRun({ runId: 42 });\n"
        "const state: string = run.state === RunState.COMPLETED ? run.state : 'other';\n"
        "console.log(state);\n"
    )
    try:
        # The package's .d.ts files were checked by the quick start's compile; only the program's errors count here.
        compiled = tsc(scratch, "--skipLibCheck", "--noEmit")
    finally:
        (scratch / "misuse.mts").unlink()
    assert compiled.returncode != 0
    assert "misuse.mts(3," in compiled.stdout and "TS2322" in compiled.stdout, compiled.stdout
    assert "misuse.mts(4," in compiled.stdout, compiled.stdout
