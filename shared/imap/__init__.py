"""IMAP, for the mailbox reader and the api's connection test: the client over aioimaplib (`client.py`)
and the pure reading of its answers (`responses.py`)."""
