"""The send path's semaphore: never more holders than slots, first come first served, nothing lost to a
cancellation."""

import asyncio

from bot.slots import Slots


async def test_takes_without_waiting_until_the_slots_are_gone():
    slots = Slots(2)
    assert slots.take_now() and slots.take_now()
    assert not slots.take_now()
    slots.give()
    assert slots.take_now()


async def test_waiters_are_served_in_order_and_a_freed_slot_goes_to_them():
    slots = Slots(1)
    await slots.take()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await slots.take()
        order.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)  # all three queue up
    assert not slots.take_now()  # a newcomer does not overtake the queue
    for n in range(3):
        slots.give()
        await tasks[n]
        assert order == list(range(n + 1))
    assert slots.free == 0  # the last waiter holds the one slot
    slots.give()
    assert slots.free == 1


async def test_a_cancelled_waiter_gives_up_its_place_and_loses_no_slot():
    slots = Slots(1)
    await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    slots.give()
    await second  # the cancelled one is skipped
    assert slots.free == 0
    slots.give()
    assert slots.free == 1


async def test_a_slot_handed_over_as_the_waiter_is_cancelled_is_passed_on():
    slots = Slots(1)
    await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # the slot goes to `first`…
    first.cancel()  # …which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    await second  # the slot moved on to `second`
    assert slots.free == 0
