"""Settings of the offline demo model, read from the environment."""

from pydantic import Field

from services.common.settings import ServiceSettings


class DemoModelSettings(ServiceSettings):
    """Where the demo model listens and how fast it streams."""

    host: str = Field("127.0.0.1", alias="DEMO_MODEL_HOST")
    #: 0 picks a free port.
    port: int = Field(8081, alias="DEMO_MODEL_PORT", ge=0, le=65535)
    #: Pause between streamed chunks, so steps visibly arrive one after another like with a real model.
    chunk_delay_seconds: float = Field(0.02, alias="DEMO_MODEL_CHUNK_DELAY_SECONDS", ge=0, le=5)
    #: Pause before each reply starts (a model "thinking"), so runs stay in flight a while; 0 answers at once.
    latency_seconds: float = Field(0.0, alias="DEMO_MODEL_LATENCY_SECONDS", ge=0, le=60)
    #: Pause before each reply to a message that says "slowly" (instead of the latency above): the seed question
    #: asked slowly takes three replies, about 30 s, long enough to watch the run and cancel it by hand.
    slow_seconds: float = Field(10.0, alias="DEMO_MODEL_SLOW_SECONDS", ge=0, le=600)
