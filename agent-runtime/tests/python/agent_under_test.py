"""The example Python FastAgentic agent (examples/python-agent/app.py, imported unchanged), with
the failures the runtime tests need next to it, written the way the package reports them:

- `POST /fail`: the agent raises (the server answers 500).
- `POST /fail/stream`: one token, then the package's `error` event, as `@agent_endpoint`
  sends it when the agent raises mid-stream.
- `POST /garbage`: a 200 whose body is not JSON.
- `POST /slow`: answers after 5 s.
- `POST /plain`: `{"result": ...}`, what `@agent_endpoint` answers for a plain return value.
"""

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import PlainTextResponse
from sse_starlette.sse import EventSourceResponse

from app import ChatIn, app  # noqa: F401  (app is what `fastagentic run` serves)
from fastagentic.types import StreamEvent, StreamEventType


@app.post("/fail")
async def fail(body: ChatIn) -> dict:
    raise RuntimeError(f"the agent failed on {body.message!r}")


@app.post("/fail/stream")
async def fail_stream(body: ChatIn) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        first = StreamEvent(type=StreamEventType.TOKEN, data={"content": "partial "})
        yield {"event": first.type.value, "data": first.model_dump_json()}
        await asyncio.sleep(0.05)
        yield {"event": "error", "data": "Internal server error"}

    return EventSourceResponse(events())


@app.post("/garbage")
async def garbage(body: ChatIn) -> PlainTextResponse:
    return PlainTextResponse("<html>not json</html>")


@app.post("/slow")
async def slow(body: ChatIn) -> dict:
    await asyncio.sleep(5)
    return {"response": body.message}


@app.post("/plain")
async def plain(body: ChatIn) -> dict:
    return {"result": f"plain: {body.message}"}
