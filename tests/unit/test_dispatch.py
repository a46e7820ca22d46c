"""The dispatcher's choice of lanes: live first, bulk's minimum share, and holding a turn while
its lane's queue still holds a backlog being read (under a rate limit only)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from worker.apply.dispatch import Dispatcher
from worker.apply.runtime import Runtime
from worker.coordination.orders import BULK, LIVE
from worker.coordination.rate import Rate


def runtime(rate: Rate | None, share: float = 0.2, hold: float = 30.0) -> Runtime:
    fleet = SimpleNamespace(rate_limit=rate, bulk_share=share, backlog_hold=hold)
    return cast(Runtime, SimpleNamespace(fleet=fleet))


def dispatcher(behind: dict[str, bool]) -> Dispatcher:
    return Dispatcher(1, lambda: behind, lambda entry: None)


def test_live_goes_first_and_every_fifth_turn_bulk_first() -> None:
    chooser = dispatcher({})
    rt = runtime(Rate(3, 1))
    firsts = []
    for turn in range(20):
        chooser.turns = turn
        firsts.append(next(iter(chooser.holds(rt))))
    assert firsts.count(BULK) == 4 and firsts.count(LIVE) == 16
    assert [i for i, lane in enumerate(firsts) if lane == BULK] == [4, 9, 14, 19]


@pytest.mark.parametrize(("share", "every"), [(1.0, 1), (0.5, 2), (0.1, 10)])
def test_the_share_sets_how_often_bulk_goes_first(share: float, every: int) -> None:
    chooser = dispatcher({})
    rt = runtime(Rate(3, 1), share=share)
    bulk_first = 0
    for turn in range(100):
        chooser.turns = turn
        bulk_first += next(iter(chooser.holds(rt))) == BULK
    assert bulk_first == 100 // every


def test_a_lane_whose_queue_is_behind_holds_its_turns_under_a_rate_limit() -> None:
    holds: dict[str, Any] = dispatcher({LIVE: True, BULK: False}).holds(runtime(Rate(3, 1)))
    assert holds == {LIVE: 30.0, BULK: 0.0}


def test_without_a_rate_limit_no_turn_waits_for_the_read() -> None:
    holds = dispatcher({LIVE: True, BULK: True}).holds(runtime(None))
    assert holds == {LIVE: 0.0, BULK: 0.0}
