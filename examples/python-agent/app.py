"""An echo agent written with the Python FastAgentic package (PyPI `fastagentic`, 1.2.2).

Served by the package's own CLI (`fastagentic run app:app --host 0.0.0.0 --port 8000`), it runs
unchanged behind the FastAgentic runtime: `examples/python-agent.yaml` runs it as the
`container` agent of a FastAgentic. Replace `EchoAdapter` with your framework's adapter (the
package ships LangGraph, PydanticAI, CrewAI, ... adapters with the same `invoke` / `stream`).

The routes are `App.post` routes: in fastagentic 1.2.2 the REST routes made by
`@agent_endpoint` reject every JSON body (FastAPI answers 422, `loc: ["query", "body"]`), so the
agent answers through routes of its own, in the shapes `@agent_endpoint` uses: a JSON model
dump for `/chat`, and the package's `StreamEvent`s as server-sent events for `/chat/stream`.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from fastagentic import App
from fastagentic.adapters.base import BaseAdapter
from fastagentic.types import StreamEvent, StreamEventType

app = App(title="Python echo agent")


class ChatIn(BaseModel):
    message: str
    run_id: str | None = None


class ChatOut(BaseModel):
    response: str


class EchoAdapter(BaseAdapter):
    """Answers with the message; streams it word by word, as a model streams tokens."""

    async def invoke(self, input: ChatIn, ctx: Any) -> ChatOut:
        return ChatOut(response=f"echo: {input.message}")

    async def stream(self, input: ChatIn, ctx: Any) -> AsyncIterator[StreamEvent]:
        text = f"echo: {input.message}"
        for word in text.split(" "):
            await asyncio.sleep(0.01)
            yield StreamEvent(type=StreamEventType.TOKEN, data={"content": word + " "})
        yield StreamEvent(type=StreamEventType.DONE, data={"result": text})


agent = EchoAdapter()


@app.post("/chat")
async def chat(body: ChatIn) -> ChatOut:
    return await agent.invoke(body, None)


@app.post("/chat/stream")
async def chat_stream(body: ChatIn) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        async for event in agent.stream(body, None):
            yield {"event": event.type.value, "data": event.model_dump_json()}

    return EventSourceResponse(events())
