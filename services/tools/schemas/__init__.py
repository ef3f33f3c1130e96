"""Tool argument schemas: the one place that checks a JSON schema someone else wrote (an admin's HTTP tool, an MCP
server's inputSchema, a plugin's `parameters`) and validates a model's arguments against it, with bounds.

A schema is checked once, where it enters (CreateTool, an MCP server's tool listing, a plugin's load), by
`checks.check_schema`:

* it is JSON (a dict) of at most MAX_SCHEMA_BYTES, nesting at most MAX_SCHEMA_DEPTH levels, describing an object;
* it is valid JSON Schema 2020-12 (what OpenAI's function calling and MCP use). A `$schema` at the top is accepted
  and set aside; inside, it is refused: jsonschema would switch to that draft's keywords there, this package's
  bounded ones among them;
* its structure (`structure`): every `$ref` resolves inside the document. Nothing is fetched, ever: the registry's
  retrieval refuses, so a `$ref` to a URL is refused at creation, and a schema stored before this check fails its
  calls, never reaching out. `$dynamicRef` is refused (a metaschema's tool, not an argument schema's);
* no loop of `$ref`s and in-place keywords (allOf, anyOf, oneOf, not, if/then/else, dependentSchemas) comes back
  to a schema without descending into the arguments (`{"$ref": "#"}`, A -> B -> A): validation would never end.
  Recursion that descends (a tree's `items` referring to the tree) is fine: the arguments' depth ends it;
* the longest chain of schemas validation can nest through, arguments at most MAX_JSON_DEPTH deep, stays under
  MAX_EVALUATION_DEPTH, so that validating never runs out of Python's stack;
* every `pattern` and `patternProperties` name compiles with RE2 (`patterns`: no backreferences, no lookaround),
  the linear-time engine that also runs them; `unevaluatedProperties` together with `patternProperties` is refused
  (jsonschema evaluates that pair with Python's backtracking `re`).

A problem is a SchemaProblem (`problems`) naming the JSON pointer of the bad part.

Validation (`checks.argument_problems`) uses a Draft 2020-12 validator (`validator`) whose pattern keywords run on
RE2, whose uniqueItems is linear, and which counts the keywords it evaluates: past MAX_VALIDATION_STEPS it stops
(ValidationTooCostly), so that the time of one validation is bounded whatever the schema and the arguments. The
executor runs it off the event loop. `format` stays an annotation, as 2020-12 says by default.

Used by the tools' base class (a plugin's parameters), the executor (every call), the HTTP tools' specs and the
MCP connections (the schemas they bring).
"""
