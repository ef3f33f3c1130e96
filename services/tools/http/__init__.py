"""HTTP tools ("tools without code") as a source of tools: what an admin creates (specs.py, stored in the
`http_tools` table), the ids they get (naming.py), where they may send their calls (destinations.py), how a call
is made (calls.py) and the set of them the registry reads (sources.py)."""
