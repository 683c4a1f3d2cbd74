"""Config's per-host indexes answer exactly what a scan of the resources, in config order, did."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import (
    BackoffConfig,
    Config,
    ResourceConfig,
    SignalConfig,
    Thresholds,
)

pytestmark = pytest.mark.unit

HOSTS = ["db1", "db2", "db3", "db4"]
SIGNALS = ["connections", "lag"]


def scanned_thresholds(config: Config, signal: str, host: str) -> Thresholds:
    for resource in config.resources.values():
        if host in resource.hosts and signal in resource.overrides:
            return resource.overrides[signal]
    return config.signals[signal].thresholds


def scanned_roles(config: Config, host: str) -> frozenset[str]:
    return frozenset(r.role(host) for r in config.resources.values() if host in r.hosts) or frozenset({"host"})


limits = st.builds(Thresholds, st.floats(1, 100), st.floats(0, 1))
resource_specs = st.lists(
    st.tuples(
        st.lists(st.sampled_from(HOSTS), max_size=2, unique=True),
        st.lists(st.sampled_from(HOSTS), max_size=2, unique=True),
        st.sampled_from(["hosts", "primary", "pair"]),
        st.dictionaries(st.sampled_from(SIGNALS), limits, max_size=2),
    ),
    max_size=5,
)


@given(resource_specs)
def test_indexes_agree_with_a_scan_in_config_order(specs: list) -> None:
    resources = {
        f"r{i}": ResourceConfig(f"r{i}", tuple(writers), tuple(replicas), shape, overrides=overrides)
        for i, (writers, replicas, shape, overrides) in enumerate(specs)
    }
    config = Config(
        source="test",
        redis_url="redis://127.0.0.1:6379/0",
        probe_interval=1.0,
        probe_timeout=0.5,
        stale_after=5.0,
        backoff=BackoffConfig(),
        hosts={},
        resources=resources,
        signals={name: SignalConfig(name, high=10.0, low=5.0) for name in SIGNALS},
        queues={},
    )
    for host in [*HOSTS, "elsewhere"]:
        assert config.host_roles(host) == scanned_roles(config, host)
        for signal in SIGNALS:
            assert config.thresholds(signal, host) == scanned_thresholds(config, signal, host)
