"""The built-in tools folder. Every *.py file here (except _private ones) is a tool plugin: drop in a file with a
BaseTool subclass and the tool appears, with no other change. The registry loads these files by path."""
