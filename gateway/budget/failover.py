"""`FailoverLedger`: the fleet's slots in Redis while it answers, this process's share of the
account's limit while it does not, chosen at each grant.

The two sides know nothing of each other's slots, so each switch has a rule that keeps the
account under its limit (the proof is in `docs/architecture.md`):

- While degraded, this process grants at most its share (`upstream_qps // expected_replicas`):
  all the processes that lost Redis together stay under the limit.
- *Settling in*: no local slot before one window (`settle`) after the switch, because the
  fleet's last second through Redis still counts upstream. This process's own calls still in
  flight on shared slots are counted locally until they complete.
- *Settling back*: for `both_window` seconds after Redis answers again, every grant takes a slot
  on both sides, so this process stays within its share until every busy process is back (each
  comes back at its next probe) and every purely local slot has expired. `both_window` must
  cover the probe interval, a probe that was failing when Redis came back (the Redis timeout)
  and one window.
- The side is chosen when a slot is granted, never when a caller starts waiting, so no slot is
  granted outside Redis unless this process is degraded at that moment; and a due probe goes to
  Redis at once, without waiting for a local slot.

Left over: a process that alone loses Redis (a partition) adds its share to what the others
take through Redis until its next successful probe, and a call that outlives the settling time
on another process is not counted here. The upstream answers such excess with Throttling,
which the budget slows down for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from gateway.budget.ledger import Ledger, LedgerStatus, Taken
from gateway.budget.local import LocalLedger
from gateway.shared.backend import BackendUnavailable
from gateway.shared.switch import BackendSwitch, Route

__all__ = ["FailoverLedger", "FailoverSlot"]


class FailoverSlot:
    """The token of one slot: its shared member (None when granted locally), and whether it
    also holds a local slot. `local` turns True when the process fails over while the call is
    in flight: from then on it counts against the local share until it completes."""

    __slots__ = ("local", "member")

    def __init__(self, member: str | None, *, local: bool) -> None:
        self.member = member
        self.local = local


class FailoverLedger:
    """A `Ledger` over `primary` (shared) and `fallback` (this process's share), following
    `switch`; see the module docstring. `clock` is the budget's clock."""

    def __init__(
        self,
        primary: Ledger[str],
        fallback: LocalLedger,
        switch: BackendSwitch,
        *,
        settle: float | None = None,
        both_window: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._switch = switch
        self._settle = fallback.window if settle is None else settle
        self._both_window = (
            switch.probe_interval + self._settle if both_window is None else both_window
        )
        if self._settle < 0 or self._both_window < 0:
            raise ValueError(
                "Expected settling times of at least 0 s, received "
                f"settle={self._settle} and both_window={self._both_window}."
            )
        self._clock = clock
        #: No local slot is granted before this time (settling in).
        self._fallback_from = -math.inf
        #: Until this time, a shared slot also takes a local one (settling back).
        self._both_until = -math.inf
        #: Slots granted and not finished, to count locally when the process fails over.
        self._outstanding: set[FailoverSlot] = set()
        switch.on_switch(self._degraded, self._recovered)

    @property
    def primary(self) -> Ledger[str]:
        return self._primary

    @property
    def fallback(self) -> LocalLedger:
        return self._fallback

    @property
    def limit(self) -> int:
        return self._fallback.limit if self._switch.degraded else self._primary.limit

    @property
    def window(self) -> float:
        return self._primary.window

    async def take(self, want: int) -> Taken[FailoverSlot]:
        switch = self._switch
        route = switch.route()
        if route is Route.FALLBACK:
            return self._take_local(want)
        if route is Route.PROBE:
            want = 1
        local: Taken[None] | None = None
        if self._clock() < self._both_until:
            local = self._fallback.take_now(want)
            if not local.tokens:
                switch.abandoned(route)
                return Taken((), local.retry_at)
            want = len(local.tokens)
        try:
            shared = await self._primary.take(want)
        except BackendUnavailable as exc:
            self._give_back_local(local)
            switch.failed(route, exc)
            return self._take_local(want)
        except BaseException:
            self._give_back_local(local)
            switch.abandoned(route)
            raise
        switch.succeeded(route)
        members = list(shared.tokens)
        if local is None and self._clock() < self._both_until:
            # This call's probe ended the outage: from now on, settling back.
            local = self._fallback.take_now(len(members))
            await self._give_back_shared(members[len(local.tokens) :])
            del members[len(local.tokens) :]
        paired = 0 if local is None else len(local.tokens)
        if local is not None and paired > len(members):
            for _ in range(paired - len(members)):
                self._fallback.finish_now(used=False)
            paired = len(members)
        slots = tuple(FailoverSlot(member, local=i < paired) for i, member in enumerate(members))
        self._outstanding.update(slots)
        if switch.degraded:
            # Granted by Redis, but another call failed the process over meanwhile.
            self._adopt(slots)
        retry_at = shared.retry_at
        if local is not None:
            retry_at = max(retry_at, local.retry_at)
        return Taken(slots, retry_at)

    async def finish(self, token: FailoverSlot, *, used: bool) -> None:
        self._outstanding.discard(token)
        if token.local:
            self._fallback.finish_now(used=used)
        if token.member is None:
            return
        try:
            await self._primary.finish(token.member, used=used)
        except BackendUnavailable as exc:
            # The call itself is done; only the release did not reach Redis, where the slot
            # now frees when its lease expires. The caller's outcome must not change.
            self._switch.failed(Route.PRIMARY, exc)

    async def throttled(self) -> None:
        """Tell the side serving now: its rate is the one that must come down."""
        if not self._switch.degraded:
            try:
                await self._primary.throttled()
            except BackendUnavailable as exc:
                self._switch.failed(Route.PRIMARY, exc)
            else:
                return
        await self._fallback.throttled()

    def earliest(self, position: int, now: float, horizon: float) -> float:
        if self._switch.degraded:
            return max(self._fallback_from, self._fallback.earliest(position, now, horizon))
        bound = self._primary.earliest(position, now, horizon)
        if now < self._both_until:
            bound = max(bound, self._fallback.earliest(position, now, horizon))
        return bound

    def status(self, now: float) -> LedgerStatus:
        serving = self._fallback if self._switch.degraded else self._primary
        return serving.status(now)

    async def aclose(self) -> None:
        await self._primary.aclose()

    def _take_local(self, want: int) -> Taken[FailoverSlot]:
        # Never past the next probe: a due probe must not wait for a local slot.
        next_probe = self._switch.next_probe
        if self._clock() < self._fallback_from:
            return Taken((), min(self._fallback_from, next_probe))
        taken = self._fallback.take_now(want)
        slots = tuple(FailoverSlot(None, local=True) for _ in taken.tokens)
        self._outstanding.update(slots)
        return Taken(slots, min(taken.retry_at, next_probe))

    def _give_back_local(self, local: Taken[None] | None) -> None:
        for _ in () if local is None else local.tokens:
            self._fallback.finish_now(used=False)

    async def _give_back_shared(self, members: list[str]) -> None:
        for member in members:
            try:
                await self._primary.finish(member, used=False)
            except BackendUnavailable as exc:
                self._switch.failed(Route.PRIMARY, exc)  # its lease frees it

    def _adopt(self, slots: tuple[FailoverSlot, ...] | set[FailoverSlot]) -> None:
        adopted = 0
        for slot in slots:
            if not slot.local:
                slot.local = True
                adopted += 1
        self._fallback.adopt(adopted)

    def _degraded(self) -> None:
        self._fallback_from = self._clock() + self._settle
        self._both_until = -math.inf
        self._adopt(self._outstanding)

    def _recovered(self) -> None:
        self._both_until = self._clock() + self._both_window
