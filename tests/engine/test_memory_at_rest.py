"""What an engine process holds before it runs anything (issue 22: engine RSS per 1,000 live runs): modules only a
rare path needs are not imported at start-up."""

import os
import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after `statement` (a fresh one: this test process has imported
    everything already), in this environment less any OTEL_* variable (tracing off, as by default)."""
    script = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    return set(done.stdout.split())


def test_the_engine_does_not_import_cel_until_a_workflow_evaluates_an_expression() -> None:
    loaded = _modules_after("import services.engine.__main__")
    assert "services.engine.workflows.runner" in loaded  # the import reached the workflow runner
    assert not {"services.common.cel", "celpy", "lark"} & loaded


def test_the_engine_does_not_import_cryptography_which_only_page_tokens_need() -> None:
    # The engine takes MAX_PAGE_SIZE from services.common.pages and never issues a page token.
    loaded = _modules_after("import services.engine.__main__")
    assert "services.common.pages" in loaded
    assert "cryptography" not in loaded
    assert "cryptography" in _modules_after(
        "from services.common.pages import PageTokens, PageTokenSettings\n"
        "PageTokens.from_settings(PageTokenSettings(PLATFORM_SERVICE_TOKEN='a-service-token'))"
    )


def test_the_opentelemetry_sdk_is_imported_only_when_tracing_is_configured() -> None:
    # Tracing is off by default; the API is all a process needs then.
    start = "from services.common.tracing import configure_tracing\nprint(configure_tracing('engine'))"
    assert "opentelemetry.sdk" not in _modules_after("import services.engine.__main__\n" + start)
    assert "opentelemetry.sdk" in _modules_after(
        "import os\nos.environ['OTEL_TRACES_EXPORTER'] = 'console'\n" + start
    )
