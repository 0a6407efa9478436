"""Infrastructure: settings, embedded services, Kafka/PostgreSQL/Redis adapters, process wiring."""

from infra.errors import ConfigError, InfraError
from infra.settings import Settings, get_settings

__all__ = ["ConfigError", "InfraError", "Settings", "get_settings"]
