"""The hub's durable record: journal, consumer cursors, dedup ids, sequence marks, dead letters.

One SQLite file (``data_dir/hub.sqlite3``) in WAL mode. The ingest thread writes the events: it
records a whole batch of MQTT messages (:class:`BatchRecord`: accepted events, the ids that make
later copies duplicates, the highest ``seq`` per sensor, dead letters, replay outcomes, loss
state, identities) in ONE transaction and only then acknowledges the batch to the broker. With
``synchronous=FULL`` (the default) the commit is on disk before the broker forgets the messages,
so neither a crash nor a power cut loses an acknowledged event; ``normal`` survives a process
crash only (the last commits may roll back on power loss, and the broker will not resend them)
and is offered for slow SD cards.

The hub's own records (its alerts, its ``hub_health`` points: ``LocalRecord``) are appended to the
same journal by ``append_local`` from other threads (the alerting consumer, the health timer), so
they get the journal's durability, order and per-consumer retry; a write lock keeps every write
transaction and offset assignment in one order. Only consumers that accept local records (storage)
receive them.

One module per job, all writing through one :class:`store.Store` (so one batch is one
transaction), behind the :class:`Journal` facade (``facade.py``):

- ``store.py``: the schema and its migrations, connections, transactions, multi-row inserts;
- ``log.py``: journal rows, offsets, cursors, the decoded tail in memory, reads, pruning;
- ``dedup.py``: the ids already seen, and their retention;
- ``marks.py``: the highest seq per sensor, the loss detector's state, the admitted identities;
- ``dead_letters.py``: the dead-letter store, replay outcomes, retention, quarantined rows.
"""

from hub.journal.dead_letters import DeadPruned, ReplayOutcome
from hub.journal.facade import BatchRecord, Journal
from hub.journal.log import LOCAL_KIND, TAIL_CAPACITY, TAIL_SLACK, Pending
from hub.journal.store import (
    DEAD_LETTER_ADDED,
    INSERT_CHUNK,
    SCHEMA,
    JournalError,
    connect,
    insert_rows,
    migrate_dead_letters,
)
from hub.records import DeadRecord  # imported from here by older callers

__all__ = ["DEAD_LETTER_ADDED", "INSERT_CHUNK", "LOCAL_KIND", "SCHEMA", "TAIL_CAPACITY",
           "TAIL_SLACK", "BatchRecord", "DeadPruned", "DeadRecord", "Journal", "JournalError",
           "Pending", "ReplayOutcome", "connect", "insert_rows", "migrate_dead_letters"]
