"""Conversation state in the store: `state:<openid>` → {"name", "values"} as JSON, expiring with the state's
ttl. Shared by every instance on the same store."""

from __future__ import annotations

import json

from ..messages import State, StateChange
from .base import Store


def state_key(user: str) -> str:
    return f"state:{user}"


async def load_state(store: Store, user: str) -> State | None:
    raw = await store.get(state_key(user))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return State(str(data["name"]), {str(k): str(v) for k, v in dict(data.get("values", {})).items()})
    except (ValueError, KeyError, TypeError):
        return None  # written by something else: as good as no state


async def save_state(store: Store, user: str, change: StateChange) -> None:
    if change.new is None:
        await store.delete(state_key(user))
    else:
        await store.set(state_key(user), json.dumps({"name": change.new.name, "values": dict(change.new.values)},
                                                    ensure_ascii=False), change.ttl)
