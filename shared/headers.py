"""Text bound for an e-mail header, made harmless by character class. Pure.

Python's e-mail code splits a header value wherever `str.splitlines()` would (CR, LF, VT, FF, the
separators 0x1c-0x1e, and in some policies NEL, U+2028 and U+2029), and a piece that does not start with white
space becomes a header of its own, or ends the header block. The other C0 and C1 controls (NUL, DEL …) have no
place in a header either. Lead data and rendered templates are cleaned with `one_line`; what a tenant
configures is refused where it matches `UNSAFE_IN_HEADER` (the api does that).
"""

from __future__ import annotations

import re

UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNSAFE_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: str) -> str:
    """`value` with every run of line-breaking or control characters turned into one space."""
    return _UNSAFE_RUN.sub(" ", value).strip()
