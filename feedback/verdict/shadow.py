"""Shadow verdicts: what the policies under trial would have held, judged apart from the real gate.

A signal with `mode = "shadow"` (a built-in, a custom query, a traffic source) and an ops'
shadow threshold (`easeoff threshold ... --shadow`) are probed and judged like any other,
but hold nothing: the gate leaves them out. Here the same gate judges a *shadow world* — the
config with those signals enforced and the shadow thresholds in force, the readings' strained
states taken from their shadow bands — and what it holds beyond the real verdict is the
shadow verdict. Pure, like the gate: the worker counts and logs it, `status`, the page and
the exporter show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import msgspec.structs

from easeoff.feedback.config import Config
from easeoff.feedback.reasons import Reason
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import strain_reasons

World = tuple[Config, Snapshot]


class ShadowJudge:
    """Judges the shadow world of each snapshot, built once per snapshot (a worker judges many
    claims against one snapshot) and not at all when no policy is in shadow."""

    def __init__(self) -> None:
        self._built: tuple[Snapshot, Config, float, World | None] | None = None

    def would_defer(
        self, resources: Iterable[str], snapshot: Snapshot, config: Config, now: float, real: Sequence[Reason] = ()
    ) -> tuple[Reason, ...]:
        """The reasons the shadow policies would have held `resources` for, beyond `real`."""
        world = self.world(snapshot, config, now)
        if world is None:
            return ()
        shadow_config, shadow_snapshot = world
        return tuple(r for r in strain_reasons(resources, shadow_snapshot, shadow_config, now) if r not in real)

    def holds(self, resource: str, snapshot: Snapshot, config: Config, now: float) -> tuple[Reason, ...]:
        """What the shadow policies would hold one resource for now, beyond the gate's own reasons."""
        if self.world(snapshot, config, now) is None:
            return ()
        return self.would_defer([resource], snapshot, config, now, strain_reasons([resource], snapshot, config, now))

    def world(self, snapshot: Snapshot, config: Config, now: float) -> World | None:
        built = self._built
        # The same snapshot and config object: reuse it; switches lapse with `now`, so a second later rebuild.
        if built is not None and built[0] is snapshot and built[1] is config and abs(built[2] - now) < 1.0:
            return built[3]
        world = shadow_world(snapshot, config, now)
        self._built = (snapshot, config, now, world)
        return world


def shadow_world(snapshot: Snapshot, config: Config, now: float) -> World | None:
    """The config and snapshot as the shadow policies would have them; None when there are none."""
    shadow_signals = {name for name, s in config.signals.items() if s.shadow}
    overridden = {s.target.name for s in snapshot.switches.shadow_thresholds(now)}
    if not shadow_signals and not overridden:
        return None
    signals = {
        name: msgspec.structs.replace(s, mode="enforce") if s.shadow else s for name, s in config.signals.items()
    }
    enforced = msgspec.structs.replace(config, signals=signals)
    switches = snapshot.switches.with_shadow_enforced(now)
    readings = snapshot.readings
    if overridden:
        readings = {target: _shadow_bands(r, overridden) for target, r in readings.items()}
    return enforced, msgspec.structs.replace(snapshot, readings=readings, switches=switches)


def _shadow_bands(reading: Reading | None, names: set[str]) -> Reading | None:
    """The reading with each shadow-overridden signal's state taken from its shadow band."""
    if reading is None or not any(name in reading.shadow_strained for name in names):
        return reading
    bands = {name: held for name, held in reading.shadow_strained.items() if name in names}
    return msgspec.structs.replace(reading, strained={**reading.strained, **bands})
