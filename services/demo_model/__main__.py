"""`python -m services.demo_model`: run the offline demo model until SIGTERM/SIGINT."""

from services.common.process import run_service
from services.demo_model.app import start_demo_model
from services.demo_model.settings import DemoModelSettings

if __name__ == "__main__":
    run_service(
        "demo-model",
        DemoModelSettings,
        start_demo_model,
        lambda settings, app: "offline demo model (deterministic, no API key needed) serving OpenAI chat "
        f"completions on {app.server.base_url}",
    )
