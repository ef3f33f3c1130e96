"""The plugin of misbehaving tools the tool workers' tests call (test_worker_pool, test_worker_pool_health),
written into the plugin folder by conftest's `pool_tools` fixture: blocking, crashing, memory- and CPU-hungry
tools, and tools raising domain errors."""

POOL_TOOLS = '''
    import asyncio
    import os
    import signal
    import time
    from pathlib import Path

    from services.common.errors import NotFound, ResourceExhausted
    from services.tools.base import BaseTool

    ANY = {"type": "object"}


    class Block(BaseTool):
        name = "block"
        display_name = "Block"
        description = "Sleeps for an hour in its thread (a blocking call)"
        parameters = ANY

        def execute(self):
            time.sleep(3600)


    class ReadFifo(BaseTool):
        name = "read_fifo"
        display_name = "Read FIFO"
        description = "Opens a FIFO nobody writes to: blocks in the kernel"
        parameters = ANY

        def execute(self, path):
            with open(path) as fifo:
                return fifo.read()


    class Crash(BaseTool):
        name = "crash"
        display_name = "Crash"
        description = "Ends its own process"
        parameters = ANY

        def execute(self, how):
            if how == "exit":
                os._exit(1)
            os.kill(os.getpid(), signal.SIGKILL)


    class Hog(BaseTool):
        name = "hog"
        display_name = "Hog"
        description = "Allocates 2 GiB"
        parameters = ANY

        def execute(self):
            return len(bytearray(2 * 1024 * 1024 * 1024))


    class Spin(BaseTool):
        name = "spin"
        display_name = "Spin"
        description = "Loops for ever on the CPU"
        parameters = ANY

        def execute(self):
            while True:
                pass


    class NoSuchThing(NotFound):
        """A plugin's own error class: it reaches the service as NotFound."""


    class Picky(BaseTool):
        name = "picky"
        display_name = "Picky"
        description = "Raises domain errors"
        parameters = ANY

        def execute(self, kind):
            if kind == "not_found":
                raise NoSuchThing("no thing called 'x'; list the things first")
            raise ResourceExhausted("too many searches; wait a little", retry_after=7.0)


    class Pid(BaseTool):
        name = "pid"
        display_name = "Pid"
        description = "Says which process ran it"
        parameters = ANY

        def execute(self):
            return os.getpid()


    class Touch(BaseTool):
        name = "touch"
        display_name = "Touch"
        description = "Writes a file: shows whether it ran"
        parameters = ANY

        def execute(self, path):
            Path(path).write_text("ran")
            return "touched"


    class Linger(BaseTool):
        name = "linger"
        display_name = "Linger"
        description = "Waits, telling a file whether it started and whether it was cancelled"
        parameters = ANY

        async def run(self, arguments, context):
            marker = Path(arguments["marker"])
            marker.write_text("started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                marker.write_text("cancelled")
                raise
'''
