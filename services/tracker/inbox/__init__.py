"""The tracker's mailbox reader (`python -m services.tracker inbox`): replies, bounces and complaints where
they really arrive, the sending mailboxes, read over IMAP (`shared/imap`: the client and its answers,
shared with the api's connection test).

- `policy.py`     PURE: backoff after failures, each reader's share of the accounts, a new folder's start,
                  a backlog cut into runs
- `store.py`      its SQL: leases, checkpoints, processed mails, the account's health
- `processing.py` a run of mails: read (the tracker's reader processes, within a budget of held mail),
                  classified and matched (`inbound.py`), recorded (`returns.py`) with their processed-mail
                  rows and their checkpoint, in one transaction (one per mail should it fail)
- `mailbox.py`    one account's life: connect, catch up every folder (the next run fetched while one is
                  recorded), IDLE or poll, back off on failure
- `lease.py`      which accounts this process reads: claimed, renewed and shared out in PostgreSQL
- `main.py`       the composition root, with /healthz, /readyz and /metrics
"""
