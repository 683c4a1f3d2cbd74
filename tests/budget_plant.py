"""A small simulated database for the budget controller's tests: the live site's latency rises
with the heavy work's level (M/M/1-like, 1/(1 - utilisation)), heavy throughput saturates, the
reading lags the truth by a few intervals (a quantile over a window), and both carry noise."""

from __future__ import annotations

import math
import random
from collections import deque

import msgspec

from easeoff.feedback.budget.controller_state import setting
from easeoff.feedback.budget.observation import BudgetObservation, Ceiling


class Plant(msgspec.Struct):
    live: float  # the live site's share of the database's capacity
    per_job: float  # what one heavy job adds to it
    saturate: float = 100.0  # throughput stops rising past this many jobs at once
    job_rate: float = 1.0  # jobs a slot finishes a second (jobs of 1 s)
    budget: float = 1.5  # latency limit, in units of the idle latency (1.0)
    lag: int = 4  # intervals the reading trails the truth by
    noise: float = 0.02  # relative noise of the latency reading and of the work counted
    learn_after: int = 4  # idle intervals the measuring side needs to learn a baseline

    def latency(self, effective: float) -> float:
        rho = self.live + self.per_job * effective
        return 1.0 / (1.0 - rho) if rho < 1 else math.inf

    def throughput(self, effective: float) -> float:
        return min(effective, self.saturate) * self.job_rate

    def best(self, margin: float) -> float:
        """The most throughput within budget less `margin` (the controller's dead band, a share of
        the budget), at the lowest level that reaches it: an integer concurrency at or above one
        job, else the largest duty cycle."""
        line = self.budget * (1 - margin)
        room = (1.0 - 1.0 / line - self.live) / self.per_job  # the effective level at the line
        if room >= 1:
            return float(min(math.floor(room), math.ceil(self.saturate)))
        return max(room, 0.0)


class Simulation:
    """Feeds a controller one observation per interval from a Plant."""

    def __init__(self, plant: Plant, seed: int, interval: float = 0.25) -> None:
        self.plant = plant
        self.rng = random.Random(seed)
        self.interval = interval
        self.at = 1000.0
        self.truth: deque[float] = deque(maxlen=plant.lag)
        self.idle = 0
        self.baseline: float | None = None

    def observe(self, level: float) -> BudgetObservation:
        """What the measuring side reports after an interval spent at `level`."""
        plant, rng = self.plant, self.rng
        effective = setting(level) if level > 0 else 0.0
        self.at += self.interval
        self.truth.append(plant.latency(effective))
        reading = sum(self.truth) / len(self.truth) * (1 + rng.gauss(0, plant.noise))
        if level <= 0:
            self.idle += 1
            if self.idle >= plant.learn_after:
                self.baseline = 1.0
        work = plant.throughput(effective) * self.interval * max(0.0, 1 + rng.gauss(0, plant.noise * 5))
        running = math.floor(effective) if effective >= 1 else int(rng.random() < effective)
        return BudgetObservation(
            resource="shard:1",
            at=self.at,
            ceilings=(Ceiling("latency", reading if math.isfinite(reading) else 1e9, plant.budget),),
            baseline=self.baseline,
            running=running,
            work_done=work,
        )
