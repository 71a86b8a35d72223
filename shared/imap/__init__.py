"""IMAP, for the mailbox reader and the api's connection test: the client over aioimaplib (`client.py`)
and the pure reading of its answers (`responses.py`)."""

# Connection or login failures in a row after which an account shows `failing` in the api (the reader goes on
# trying, backing off; the account's last error is shown from the first failure on).
FAILING_AFTER = 5
