"""`python -m tests.launcher.supervise SPECS_JSON [OPTIONS_JSON]`: a Supervisor of the given processes as a real
process, for tests that signal it. SPECS_JSON is a list of ProcessSpec fields; OPTIONS_JSON the constructor's
keyword arguments (timings)."""

import asyncio
import json
import sys

from services.launcher.stack import ProcessSpec
from services.launcher.supervisor import Supervisor

if __name__ == "__main__":
    specs = [ProcessSpec(**fields) for fields in json.loads(sys.argv[1])]
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    sys.exit(asyncio.run(Supervisor(specs, **options).run()))
