"""The one exception tree of the project: agent, hub and simulator raise these.

    ThermopipeError                      root: catch this to catch everything we raise
    ├── ContractError                    a message breaks the event contract
    │   ├── InvalidIdentifier            a site/device/sensor id unfit for a topic
    │   ├── DecodeError                  bytes that cannot become a message
    │   │   ├── UnknownEncoding          neither JSON nor Avro single-object
    │   │   ├── UnknownSchema            Avro with a fingerprint nobody registered
    │   │   ├── PayloadTooLarge          over the configured size limit
    │   │   └── InvalidMessage           decoded, but a field is missing or mistyped
    │   └── TopicError                   a topic outside the namespace, or not matching its payload
    │       └── SpoofedTopic             a payload from one device on another device's topic
    ├── ConfigError                      a config or scenario file is wrong (file, key path, reason)
    ├── SourceError                      a sensor source failed (serial, 1-Wire, simulator)
    │   └── ProtocolError                a serial line breaks schemas/SERIAL_PROTOCOL.md
    │       └── BadChecksum              a line whose checksum does not match (noise on the wire)
    ├── DeliveryError                    publishing or storing could not be done now (retryable)
    ├── ServerError                      a server the program needs is unreachable or refused us
    └── MissingDependency                a package of the program's role is not installed

Library errors (paho, pyserial, OSError, pydantic, fastavro) are translated into these at the
edge, with ``raise X(...) from exc`` so the cause is kept for the logs.
"""

from __future__ import annotations

from collections.abc import Sequence


class ThermopipeError(Exception):
    """Root of every error this project raises on purpose."""


class ContractError(ThermopipeError):
    """A message or identifier does not satisfy the event contract in ``schemas/``."""


class InvalidIdentifier(ContractError, ValueError):
    """An identifier that would break a topic (``+``, ``#``, ``/``, empty, too long...)."""


class DecodeError(ContractError):
    """Bytes could not be turned into a contract message. ``reason`` is for humans and the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownEncoding(DecodeError):
    """The payload is neither JSON nor Avro single-object encoded."""


class UnknownSchema(DecodeError):
    """Avro single-object payload whose writer-schema fingerprint is not registered."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(f"unknown Avro schema fingerprint {fingerprint.hex()}")
        self.fingerprint = fingerprint


class PayloadTooLarge(DecodeError):
    """The payload exceeds the size limit; it is rejected before any parsing."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class InvalidMessage(DecodeError):
    """Decoded, but the content breaks the contract. ``fields`` names every offending field."""

    def __init__(self, reason: str, fields: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.fields = tuple(fields)


class TopicError(ContractError):
    """A topic that is outside the namespace, or that names another device than the payload."""


class SpoofedTopic(TopicError):
    """A payload naming one device, published on another device's topic: a device speaking for
    another (dead-lettered as ``spoofed``)."""


class ConfigError(ThermopipeError):
    """A configuration or scenario file is invalid.

    ``errors`` holds one ``(key_path, reason)`` pair per problem so that every problem can be
    printed at once, e.g. ``("sensors[2].thresholds.high", "must be above 'low'")``.
    """

    def __init__(self, source: str, errors: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = [f"{source}: {path}: {reason}" if path else f"{source}: {reason}"
                 for path, reason in self.errors]
        super().__init__("\n".join(lines) if lines else f"{source}: invalid")


class SourceError(ThermopipeError):
    """A sensor source failed: device gone, read failed, permission denied."""


class ProtocolError(SourceError):
    """A serial line that breaks the protocol (bad checksum, bad frame). ``line`` is kept."""

    def __init__(self, reason: str, line: bytes | str = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class BadChecksum(ProtocolError):
    """A line whose CRC does not match its bytes: noise on the wire, counted apart from lines
    that are malformed (a firmware bug)."""


class DeliveryError(ThermopipeError):
    """Publishing or writing could not be done now; the caller keeps the data and retries."""


class ServerError(ThermopipeError):
    """A server (broker, database, SMTP...) refused us or cannot be reached."""


class MissingDependency(ThermopipeError):
    """A feature needs a package that this installation lacks; ``extra`` is the pip extra to add.

    The message is one line a person can act on, e.g. ``Avro encoding needs fastavro, which is
    not installed: pip install 'thermopipe[avro]'``.
    """

    def __init__(self, what: str, missing: Sequence[str], extra: str,
                 install: str | None = None) -> None:
        self.what = what
        self.missing = tuple(missing)
        self.extra = extra
        names = ", ".join(self.missing)
        verb = "is" if len(self.missing) == 1 else "are"
        # ``install``: this installation's command (program_support.extras.install_command)
        install = install or f"pip install 'thermopipe[{extra}]'"
        super().__init__(f"{what} needs {names}, which {verb} not installed: {install}")
