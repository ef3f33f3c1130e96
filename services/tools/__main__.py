"""`python -m services.tools`: run the tools service until SIGTERM/SIGINT."""

from services.common.process import run_service
from services.tools.app import start_tools
from services.tools.settings import ToolsSettings

if __name__ == "__main__":
    run_service(
        "tools",
        ToolsSettings,
        start_tools,
        lambda settings, app: f"tools service listening on {settings.host}:{app.port} "
        f"(workspace {settings.workspace})",
    )
