"""The agent's log set-up is the one both programs share: :mod:`schemas.log_setup`."""

from schemas.log_setup import PRIORITIES, configure, journal_stream, prefixed, to_journal

__all__ = ["PRIORITIES", "configure", "journal_stream", "prefixed", "to_journal"]
