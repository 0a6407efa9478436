"""The root error of the infra folder."""


class InfraError(Exception):
    """Base class of every error raised by infrastructure code."""


class ConfigError(InfraError):
    """A setting (an `AUTOOPS_*` environment variable) is missing or malformed."""
