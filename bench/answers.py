"""Answers to queries of fresh ids under load: each id answered or refused, and every refusal
checked against what the README promises a client.

Shared by `bench.overload` and `bench.redis_outage`: both ask for ids nobody asked for before
(made-up 32-hex ids, unknown to the simulator, so each costs one upstream call and is answered
`null`), more of them than the budget can serve, and count what came back. An id is *answered*
(null without an error) or *refused* with an error at its path (or an error of the whole query).
What makes a run invalid (`Tally.invalidities`): an HTTP status other than 200, an answer that
is not one entry per id, an error without `extensions.code`, a code other than those a gateway
shedding load may give (`BUDGET_EXHAUSTED`, `DEADLINE_EXCEEDED`, `OVERLOADED`), a
`BUDGET_EXHAUSTED` or `OVERLOADED` without a numeric `retryAfter`, a non-null job, and a
request that got no answer at all.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.openloop import Outcome

#: One query of several ids, and one of a single id.
JOBS_QUERY = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id } }"
JOB_QUERY = "query Job($id: ID!) { job(id: $id) { id } }"
#: The codes of a gateway that sheds load: no slot before the deadline, a call (its own or
#: another process's) still under way at the deadline or a deadline passed before the request
#: ran, or GATEWAY_MAX_CONCURRENT_REQUESTS running. Anything else is a failure or a bug.
SHEDDING_CODES = frozenset({"BUDGET_EXHAUSTED", "DEADLINE_EXCEEDED", "OVERLOADED"})
#: Codes whose README row promises a `retryAfter`.
RETRY_AFTER_CODES = frozenset({"BUDGET_EXHAUSTED", "UPSTREAM_THROTTLED", "OVERLOADED"})
#: Examples kept per kind of problem.
_EXAMPLES = 2


def fresh_id(number: int, run: int = 0) -> str:
    """A well-formed job id nobody asked for before in this run (32 hex characters), unknown
    to the simulator: one upstream call each, answered null."""
    return f"{run:08x}{number:024x}"


def payload(ids: list[str]) -> bytes:
    """The JSON body asking for `ids`: `job(id:)` for one id, `jobs(ids:)` for more."""
    if len(ids) == 1:
        return json.dumps({"query": JOB_QUERY, "variables": {"id": ids[0]}}).encode()
    return json.dumps({"query": JOBS_QUERY, "variables": {"ids": ids}}).encode()


@dataclass(slots=True)
class Tally:
    """What the answers held, over all requests."""

    requests: int = 0
    ids: int = 0
    answered: int = 0
    #: Ids refused, by code (`no code` for an error without one).
    refused: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    #: Requests that got no answer (timeout, connection lost), by reason.
    unanswered: Counter[str] = field(default_factory=Counter)
    #: What makes the run invalid, by kind, and a few examples of each.
    problems: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: `retryAfter` of every refusal that had one (seconds).
    retry_after: list[float] = field(default_factory=list)

    @property
    def refused_ids(self) -> int:
        return sum(self.refused.values())

    def add(self, ids: list[str], outcome: Outcome) -> None:
        """Count one request for `ids` and its outcome."""
        self.requests += 1
        self.ids += len(ids)
        if outcome.failure is not None:
            self.unanswered[outcome.failure.split(":")[0]] += 1
            self._problem("no answer", outcome.failure)
            return
        self.statuses[outcome.status] += 1
        if outcome.status != 200:
            kind = "HTTP 5xx" if outcome.status >= 500 else f"HTTP {outcome.status}"
            self._problem(kind, outcome.body[:200].decode(errors="replace"))
            return
        try:
            answer: dict[str, Any] = json.loads(outcome.body)
        except ValueError:
            self._problem("unreadable body", outcome.body[:200].decode(errors="replace"))
            return
        data = answer.get("data") or {}
        entries = [data.get("job")] if len(ids) == 1 else data.get("jobs")
        if entries is None and len(ids) > 1:
            entries = [None] * len(ids)  # the whole query failed: its errors say why
        if not isinstance(entries, list) or len(entries) != len(ids):
            self._problem("not one entry per id", outcome.body[:200].decode(errors="replace"))
            return
        codes = self._codes(answer.get("errors") or [], len(ids))
        for index, entry in enumerate(entries):
            code = codes.get(index)
            if code is not None:
                self.refused[code] += 1
            elif entry is None:
                self.answered += 1
            else:
                self._problem("a job for a made-up id", f"{ids[index]}: {entry!r}")

    def _codes(self, errors: list[dict[str, Any]], count: int) -> dict[int, str]:
        """Each refused id's index -> its error's code; every error checked on the way."""
        codes: dict[int, str] = {}
        for error in errors:
            extensions = error.get("extensions") or {}
            code = str(extensions.get("code") or "no code")
            if code == "no code":
                self._problem("an error without a code", str(error)[:200])
            elif code not in SHEDDING_CODES:
                self._problem(f"unexpected code {code}", str(error.get("message"))[:200])
            if code in RETRY_AFTER_CODES:
                retry_after = extensions.get("retryAfter")
                if isinstance(retry_after, int | float) and retry_after >= 0:
                    self.retry_after.append(float(retry_after))
                else:
                    self._problem(f"{code} without retryAfter", str(error)[:200])
            elif isinstance(extensions.get("retryAfter"), int | float):
                self.retry_after.append(float(extensions["retryAfter"]))
            path = error.get("path") or []
            if count > 1 and len(path) >= 2 and isinstance(path[1], int):
                codes[path[1]] = code
            else:  # the single id of job(id:), or an error of the whole query
                codes.update(dict.fromkeys(range(count), code))
        return codes

    def _problem(self, kind: str, example: str) -> None:
        self.problems[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < _EXAMPLES:
            kept.append(example)

    def describe(self) -> list[str]:
        """Lines on the ids, the refusals and the problems."""
        share = 100 / max(self.ids, 1)
        by_code = ", ".join(f"{code} {count}" for code, count in self.refused.most_common())
        lines = [
            f"ids: {self.ids} asked in {self.requests} requests; {self.answered} answered "
            f"({share * self.answered:.1f}%), {self.refused_ids} refused "
            f"({share * self.refused_ids:.1f}%){f': {by_code}' if by_code else ''}",
            "HTTP statuses: "
            + ", ".join(f"{status} x{count}" for status, count in sorted(self.statuses.items()))
            + (f"; no answer: {dict(self.unanswered)}" if self.unanswered else ""),
        ]
        if self.retry_after:
            ordered = sorted(self.retry_after)
            lines.append(
                f"retryAfter of the refusals: min {ordered[0]:.3f} s, median "
                f"{ordered[len(ordered) // 2]:.3f} s, max {ordered[-1]:.3f} s "
                f"({len(ordered)} refusals carried one)"
            )
        for kind, count in self.problems.most_common():
            lines.append(f"PROBLEM {kind}: {count} (e.g. {self.examples[kind]})")
        return lines

    def invalidities(self) -> list[str]:
        """What makes a run invalid (see the module docstring)."""
        return [f"{count} x {kind}" for kind, count in self.problems.most_common()]
