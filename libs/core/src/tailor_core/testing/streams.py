"""Reading back what a stream holds, for assertions."""

from __future__ import annotations

from nats.js import JetStreamContext


async def stream_message_ids(js: JetStreamContext, stream: str) -> list[str]:
    """Every message's ``Nats-Msg-Id`` in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    ids = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
    return ids
