"""`agentplatform`, the command line of the platform on the SDK (Typer and Rich; `pip install
'agentplatform-client[cli]'`): app.py has the commands, timeline.py the live view of a run, output.py JSON and
exit codes."""
