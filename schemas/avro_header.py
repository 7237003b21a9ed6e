"""The Avro single-object header, with no fastavro: the codec sniffs it on every payload, the
registry (which needs fastavro) writes and resolves it. Both import it from here, so the arrow
runs one way (codec -> registry, lazily) and a JSON-only install never loads fastavro."""

from __future__ import annotations

#: Avro single-object encoding's marker: ``C3 01``, then the 8-byte schema fingerprint
AVRO_MAGIC = b"\xc3\x01"
