"""MCP (Model Context Protocol) servers as sources of tools: their registration (servers.py), the tool ids their
tools get (naming.py), one supervised session per server (connection.py) and the set of them the registry reads
(sources.py)."""
