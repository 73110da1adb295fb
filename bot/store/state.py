"""Conversation state in the store: `state:<openid>` → {"name", "values"} as JSON, expiring with the state's
ttl. Shared by every instance on the same store."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..messages import State, StateChange
from .base import Store


def state_key(user: str) -> str:
    return f"state:{user}"


async def load_state(store: Store, user: str) -> State | None:
    return parse_state(await store.get(state_key(user)))


def parse_state(raw: str | None) -> State | None:
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


# ---- handoff: the user is with human agents ------------------------------------------------------------

def handoff_key(user: str) -> str:
    return f"handoff:{user}"


async def in_handoff(store: Store, user: str) -> bool:
    return bool(await store.get(handoff_key(user)))


async def start_handoff(store: Store, user: str, quiet: float) -> None:
    await store.set(handoff_key(user), "1", quiet)


async def end_handoff(store: Store, user: str) -> None:
    await store.delete(handoff_key(user))


# ---- cooldowns: rules that answered this user recently -------------------------------------------------

def cooldown_key(user: str) -> str:
    return f"cooldowns:{user}"


async def load_cooldowns(store: Store, user: str, now: float) -> dict[str, float]:
    """rule name → until, for the rules still cooling down for this user."""
    return parse_cooldowns(await store.get(cooldown_key(user)), now)


def parse_cooldowns(raw: str | None, now: float) -> dict[str, float]:
    try:
        data = json.loads(raw) if raw else {}
        return {str(k): float(v) for k, v in data.items() if float(v) > now}
    except (ValueError, TypeError, AttributeError):
        return {}


async def save_cooldowns(store: Store, user: str, cooling: Mapping[str, float], now: float) -> None:
    """Store the user's cooldowns (rule name → until), kept until the last of them ends."""
    await store.set(cooldown_key(user), json.dumps(dict(cooling)), max(1.0, max(cooling.values()) - now))
