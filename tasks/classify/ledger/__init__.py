"""The ledger: what has been processed, kept in the output location, committed exactly once.

Layout (it travels with the data, so a copied output knows what it already holds)::

    OUTPUT/_posebatch/lock                      flock'ed by the run writing to OUTPUT
    OUTPUT/_posebatch/lease.json                the writer lease of an s3:// output (lease.py)
    OUTPUT/_posebatch/ledger/commits/c-<seq>-<id>.json   one record per commit (or a group)
    OUTPUT/_posebatch/ledger/chunks/<id>.parquet   a chunk's entries, named by its record
    OUTPUT/_posebatch/ledger/segments/s-<first>-<last>.parquet   folded records (entries)
    OUTPUT/_posebatch/staging/<id>/...          parts written but not yet committed
    OUTPUT/_posebatch/quarantine/               unreadable parts set aside by a forget

Each entry records the part holding the file's rows (``part``); compaction and forgetting
(``tasks/classify/verify.py``) move entries to the part replacing theirs (``moves``), and a
``forgotten`` entry cancels the earlier entries of its (path, sha256).

A commit, in order:

1. the Parquet part(s) are written under ``staging/<id>/`` (fsync'ed); a Dask worker also
   writes the chunk's entries as ``ledger/chunks/<id>.parquet``;
2. the commit record (the files' identities and outcomes inline, or the name and row count
   of the chunk's entries object; and where each staged part goes) is written atomically
   (temporary file + fsync + rename; one PUT on ``s3://``): **this is the commit point**.
   Several chunks ready at once may be committed by one file holding their records
   (``Ledger.commit_group``, record format 4): one commit point for all of them;
3. the staged parts are renamed into ``predictions/date=.../part-<seq>-<id>.parquet``.

On start (``reconcile``), under the lock: records whose parts are still staged are rolled
forward (step 3 again, idempotent); staging folders and entries objects that no record
names are deleted (their files are processed again); leftovers of an interrupted fold are
removed. So a SIGKILL at
any instant leaves either no trace of a chunk or a commit that the next run completes: every
frame lands exactly once. Compaction uses the same record, with parts to remove.

Records are folded into Parquet segments (and segments merged) so that thousands of runs
stay fast: a segment covers a range of commit numbers, a record whose number a segment
covers is already folded, a segment inside another's range was merged.

The package, one owner a module: ``records`` (the format and its versions, ``FORMAT``),
``files`` (durable writes), ``replay`` (reading back every older format), ``book`` (the
``Ledger``: queries, commit and fencing, reconcile), ``fold`` (segments), ``lock`` (one
writer per output).
"""

from tasks.classify.ledger.book import Ledger
from tasks.classify.ledger.files import makedirs_durable, move, remove_tree, write_durable
from tasks.classify.ledger.lock import LockHeld, OutputLock
from tasks.classify.ledger.records import (
    CHUNKS,
    COMMITS,
    ENTRY_FIELDS,
    ENTRY_SCHEMA,
    FORGOTTEN,
    LOCK_FILE,
    MAX_SEGMENTS,
    QUARANTINE,
    ROWS_IN,
    SEGMENTS,
    STAGING,
    STATE,
    STATUSES,
    CommitRecord,
    Part,
    new_commit_id,
    staging_dir,
)
from tasks.classify.ledger.replay import effective, relocate

__all__ = [
    "CHUNKS", "COMMITS", "ENTRY_FIELDS", "ENTRY_SCHEMA", "FORGOTTEN", "LOCK_FILE", "MAX_SEGMENTS",
    "QUARANTINE", "ROWS_IN", "SEGMENTS", "STAGING", "STATE", "STATUSES", "CommitRecord",
    "Ledger", "LockHeld", "OutputLock", "Part", "effective", "makedirs_durable", "move",
    "new_commit_id", "relocate", "remove_tree", "staging_dir", "write_durable",
]
