"""`python -m services.engine`: run the engine until SIGTERM/SIGINT."""

from services.common.process import run_service
from services.engine.app import start_engine
from services.engine.settings import EngineSettings

if __name__ == "__main__":
    run_service(
        "engine",
        EngineSettings,
        start_engine,
        lambda settings, app: f"engine {app.scheduler.executor_id} listening on {settings.host}:{app.port} (model "
        f"{settings.llm_model} at {settings.llm_base_url}; runs {settings.runs_address}; tools "
        f"{settings.tools_address})",
    )
