"""What an IMAP server's answers say, from aioimaplib's response lines. Pure.

aioimaplib hands back the untagged lines without their `* ` and a FETCH body as the line announcing the
literal (`1 FETCH (UID 7 BODY[] {319}`), the literal itself (a bytearray), then the rest of the line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
FETCH_UID = re.compile(rb"^\d+ FETCH \(.*?\bUID (\d+)")
FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
LITERAL = re.compile(rb"\{(\d+)\}$")
LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


class Unexpected(Exception):
    """The server answered something this reader cannot use."""


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None  # None: the server did not say


def folder_state(lines: Sequence[bytes | bytearray]) -> FolderState:
    """From the answer to SELECT."""
    text = b"\n".join(bytes(line) for line in lines)
    validity = UIDVALIDITY.search(text)
    if validity is None:
        raise Unexpected("the folder has no UIDVALIDITY")
    following = UIDNEXT.search(text)
    return FolderState(int(validity.group(1)), int(following.group(1)) if following else None)


def searched_uids(lines: Sequence[bytes | bytearray], after: int = 0) -> list[int]:
    """From the answer to UID SEARCH (aioimaplib gives the numbers without `SEARCH`, then the completion
    text), the UIDs above `after` in ascending order (`UID n:*` names the highest UID, even below n)."""
    uids: set[int] = set()
    for line in lines[:-1]:
        words = bytes(line).split()
        if words[:1] == [b"SEARCH"]:
            words = words[1:]
        if all(word.isdigit() for word in words):
            uids.update(int(word) for word in words)
    return sorted(uid for uid in uids if uid > after)


def fetched_sizes(lines: Sequence[bytes | bytearray]) -> dict[int, int]:
    """From the answer to UID FETCH (UID RFC822.SIZE): each UID's size in bytes."""
    sizes = {}
    for line in lines:
        uid, size = FETCH_UID.search(bytes(line)), FETCH_SIZE.search(bytes(line))
        if uid and size:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def fetched_bodies(lines: Sequence[bytes | bytearray]) -> dict[int, bytes]:
    """From the answer to UID FETCH (UID BODY.PEEK[]): each mail's bytes by UID (one expunged is missing)."""
    bodies = {}
    for index, line in enumerate(lines[:-1]):
        if isinstance(line, bytes) and (uid := FETCH_UID.search(line)) and LITERAL.search(line):
            bodies[int(uid.group(1))] = bytes(lines[index + 1])
    return bodies


def folder_names(lines: Sequence[bytes | bytearray]) -> list[str]:
    """From the answer to LIST: the folders that can be selected."""
    names = []
    for line in lines:
        match = LIST_LINE.match(bytes(line))
        if match is None or b"\\noselect" in match.group("flags").lower():
            continue
        name = match.group("name")
        if name.startswith(b'"') and name.endswith(b'"'):
            name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
        names.append(name.decode("utf-8", "replace"))
    return names
