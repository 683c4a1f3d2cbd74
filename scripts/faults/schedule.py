"""The nemesis's seeded fault schedule: which fault, when, for how long. Pure: the same seed, kinds
and duration give the same schedule, printed at the start so a failing run can be replayed.

Faults of one family never overlap (the Redis primary cannot be stalled while it is being killed;
MariaDB is not piled with connections while it restarts); faults of different families overlap
as they fall.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# kind → (family, faults per 100 s of schedule, (shortest, longest) seconds; quick run's, full run's)
KINDS: dict[str, tuple[str, float, tuple[float, float], tuple[float, float]]] = {
    "redis_stop": ("redis", 1.2, (8, 20), (5, 40)),  # SIGSTOP the primary
    "redis_kill": ("redis", 1.2, (0.5, 2), (0.5, 3)),  # SIGKILL the primary; AOF restart after this long
    "failover": ("redis", 0.4, (0, 0), (0, 0)),  # SIGKILL the primary until Sentinel promotes the replica
    "worker_stop": ("worker_stop", 4.0, (3, 15), (3, 20)),  # SIGSTOP a worker's parent only
    "worker_kill": ("worker_kill", 6.0, (0, 0), (0, 0)),  # SIGKILL a worker and its horse
    "horse_kill": ("horse_kill", 4.0, (0, 0), (0, 0)),  # SIGKILL a work horse alone
    "skew": ("skew", 1.5, (15, 30), (20, 90)),  # an extra worker under faketime, this long
    "mysql_restart": ("mysql", 1.2, (1, 3), (1, 5)),  # MariaDB stopped, down this long, started
    "strain": ("mysql", 2.5, (4, 10), (5, 20)),  # connections piled over `connections` high
    "pause": ("pause", 2.5, (4, 10), (5, 20)),  # `easeoff pause resource:shard:N`
}
FAILOVER_HOLD = 45.0  # what a failover takes in the schedule: down-after 30 s, election, rejoin
SHARDS = (1, 2, 3)
WARMUP = 3.0  # seconds before the first fault: workers up, jobs flowing


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the nemesis's start
    kind: str
    seconds: float  # how long it holds (0: a moment)
    pick: int  # chooses the victim among what is live when it fires (a worker, a horse)
    skew: float = 0.0  # for `skew`: the worker's clock offset
    shard: int = 0  # for `pause`: the shard paused

    @property
    def family(self) -> str:
        return KINDS[self.kind][0]

    @property
    def holds(self) -> float:
        return FAILOVER_HOLD if self.kind == "failover" else self.seconds

    def describe(self) -> str:
        extra = {"skew": f" clock {self.skew:+.0f}s", "pause": f" resource:shard:{self.shard}"}.get(self.kind, "")
        hold = f" for {self.seconds:.1f}s" if self.seconds else ""
        return f"at {self.at:6.1f}s {self.kind}{hold}{extra} (pick {self.pick})"


def parse_kinds(text: str) -> list[str]:
    """`all`, or a comma-separated list of KINDS; ValueError names the unknown one."""
    if text.strip() == "all":
        return list(KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kind {', '.join(unknown) or '(none)'}; known: {', '.join(KINDS)}, all")
    return kinds


def make_schedule(seed: int, kinds: list[str], duration: float, quick: bool) -> list[Fault]:
    """Faults for `duration` seconds: each kind at its rate (at least one of each), at seeded times."""
    faults: list[Fault] = []
    for kind in kinds:
        rng = random.Random(f"{seed}:{kind}")  # a kind's own stream: a subset (`--faults`) replays its times
        _, per_100s, quick_range, full_range = KINDS[kind]
        low, high = quick_range if quick else full_range
        count = max(1, round(per_100s * duration / 100))
        if kind == "failover":
            count = max(1, int(duration // 150)) if not quick else 1
        for _ in range(count):
            faults.append(
                Fault(
                    at=round(rng.uniform(WARMUP, max(WARMUP, duration - (high if kind != "failover" else 0))), 1),
                    kind=kind,
                    seconds=round(rng.uniform(low, high), 1),
                    pick=rng.randrange(1 << 16),
                    skew=round(rng.choice((-1, 1)) * rng.uniform(5, 15)),
                    shard=rng.choice(SHARDS),
                )
            )
    return _spread(sorted(faults, key=lambda f: (f.at, f.kind)))


def _spread(faults: list[Fault]) -> list[Fault]:
    """Push a fault later until its family's previous one is over (two seconds apart)."""
    free_at: dict[str, float] = {}
    out = []
    for f in faults:
        at = max(f.at, free_at.get(f.family, 0.0))
        if f.family in ("redis", "mysql"):
            free_at[f.family] = at + f.holds + 2.0
        out.append(Fault(round(at, 1), f.kind, f.seconds, f.pick, f.skew, f.shard))
    return sorted(out, key=lambda f: (f.at, f.kind))
