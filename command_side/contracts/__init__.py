"""Published contracts: the event envelope, its JSON Schemas, upcasting and the log reader."""

from command_side.contracts.envelope import (
    Envelope,
    EnvelopeError,
    decode,
    encode,
    to_envelope,
    upcast,
)

__all__ = ["Envelope", "EnvelopeError", "decode", "encode", "to_envelope", "upcast"]
