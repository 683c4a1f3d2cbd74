"""One TOML file describes the fleet; this package turns it into checked, typed settings.

- schema.py: the file's shape, decoded by msgspec (types, bounds, unknown keys, located errors);
- units.py: durations, rates and a budget's latency, decoded through msgspec's dec_hook;
- build.py and rules.py: the environment's overrides and the rules between settings;
- model.py: the settings the rest of easeoff reads (`Config` and its parts);
- errors.py: `ConfigError`, one line naming the file and the key; load.py: finding and reading.
"""

from easeoff.feedback.config.errors import ConfigError
from easeoff.feedback.config.load import default_config_path, load_config, packaged_example_path, parse_config
from easeoff.feedback.config.model import (
    BUILTIN_SIGNALS,
    HOST_SIGNALS,
    REPLICA_SIGNALS,
    REPLICATING_ROLES,
    TRAFFIC_SOURCES,
    WRITER_ROLES,
    BackoffConfig,
    BudgetConfig,
    ConcurrencyConfig,
    Config,
    MySQLHost,
    QueueConfig,
    ResourceConfig,
    SignalConfig,
    Source,
    Thresholds,
    WaterMark,
)

__all__ = [
    "BUILTIN_SIGNALS",
    "HOST_SIGNALS",
    "REPLICATING_ROLES",
    "REPLICA_SIGNALS",
    "TRAFFIC_SOURCES",
    "WRITER_ROLES",
    "BackoffConfig",
    "BudgetConfig",
    "ConcurrencyConfig",
    "Config",
    "ConfigError",
    "MySQLHost",
    "QueueConfig",
    "ResourceConfig",
    "SignalConfig",
    "Source",
    "Thresholds",
    "WaterMark",
    "default_config_path",
    "load_config",
    "packaged_example_path",
    "parse_config",
]
