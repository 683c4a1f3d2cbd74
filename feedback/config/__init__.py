"""One TOML file describes the fleet; this package turns it into checked, typed settings.

- schema.py: the file's shape, decoded by msgspec (types, bounds, unknown keys, located errors);
- units.py: durations, rates and a budget's latency, decoded through msgspec's dec_hook;
- build.py and rules.py: the environment's overrides and the rules between settings;
- model.py: the settings the rest of easeoff reads (`Config` and its parts);
- errors.py: `ConfigError`, one line naming the file and the key; load.py: finding and reading.
"""

from easeoff.feedback.config.build import REDIS_URL_ENV, TASK_MODULES_ENV, host_env_prefix
from easeoff.feedback.config.errors import ConfigError
from easeoff.feedback.config.load import (
    APP_CONFIG_NAME,
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    default_config_path,
    load_config,
    packaged_example_path,
    parse_config,
)
from easeoff.feedback.config.model import (
    BUILTIN_SIGNALS,
    HOST_SIGNALS,
    LATENCY_SOURCES,
    REPLICA_SIGNALS,
    REPLICATING_ROLES,
    SOURCES,
    TRAFFIC_SOURCES,
    WATERMARK_MEASURES,
    WRITER_ROLES,
    BackoffConfig,
    BudgetConfig,
    ConcurrencyConfig,
    Config,
    LatencySource,
    Measure,
    Mode,
    MySQLHost,
    Priority,
    QueueConfig,
    ResourceConfig,
    Role,
    Shape,
    SignalConfig,
    Source,
    Thresholds,
    WaterMark,
)

__all__ = [
    "APP_CONFIG_NAME",
    "BUILTIN_SIGNALS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "HOST_SIGNALS",
    "LATENCY_SOURCES",
    "REDIS_URL_ENV",
    "REPLICATING_ROLES",
    "REPLICA_SIGNALS",
    "SOURCES",
    "TASK_MODULES_ENV",
    "TRAFFIC_SOURCES",
    "WATERMARK_MEASURES",
    "WRITER_ROLES",
    "BackoffConfig",
    "BudgetConfig",
    "ConcurrencyConfig",
    "Config",
    "ConfigError",
    "LatencySource",
    "Measure",
    "Mode",
    "MySQLHost",
    "Priority",
    "QueueConfig",
    "ResourceConfig",
    "Role",
    "Shape",
    "SignalConfig",
    "Source",
    "Thresholds",
    "WaterMark",
    "default_config_path",
    "host_env_prefix",
    "load_config",
    "packaged_example_path",
    "parse_config",
]
