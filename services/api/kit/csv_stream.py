"""CSV records from UTF-8 bytes that arrive in pieces, exactly as `csv.reader` reads the whole file opened
with `encoding="utf-8-sig", newline=""`. Pure: the import route feeds it what the network delivers.

The reader only sees complete lines. A record that continues past the end of what has arrived (a quoted
field with a line break in it) is read again, from its first line, once more text is there; a record longer
than `max_record_chars` is refused, so that re-reading it stays cheap.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import deque
from collections.abc import Iterator

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")  # what `newline=""` ends a line with


class CsvStream:
    def __init__(self, max_record_chars: int) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._max_record_chars = max_record_chars
        self._lines: deque[str] = deque()  # complete lines the reader has not taken
        self._tail = ""  # text after the last complete line
        self._record: list[str] = []  # the lines the reader took for the record it is reading
        self._ran_out = False
        self._reader = csv.reader(self)
        self._lines_read = 0  # lines of the records read so far

    @property
    def line_num(self) -> int:
        """The line the reader is at, as `csv.reader.line_num` counts them over the whole file."""
        return self._lines_read + len(self._record)

    def feed(self, data: bytes, final: bool = False) -> Iterator[tuple[int, list[str]]]:
        """The records that `data` completes, each with the number of its last line. `final` at the end of
        the file reads what is left as the whole-file reader would. Raises `UnicodeDecodeError` and
        `csv.Error` as that reader does."""
        self._split(self._decoder.decode(data, final), final)
        while True:
            self._record, self._ran_out = [], False
            values = next(self._reader, None)
            if self._ran_out and not final:
                self._lines.extendleft(reversed(self._record))  # cut off: read it again with more text
                self._refuse_long_record()
                return
            if values is None:
                return
            self._lines_read += len(self._record)
            yield self._lines_read, values

    def _split(self, text: str, final: bool) -> None:
        text = self._tail + text
        end = 0
        for line in LINE.finditer(text):
            if line.end() == len(text) and text.endswith("\r") and not final:
                break  # the "\n" of a "\r\n" may be in the next piece
            self._lines.append(line.group())
            end = line.end()
        self._tail = text[end:]
        if final and self._tail:
            self._lines.append(self._tail)
            self._tail = ""

    def _refuse_long_record(self) -> None:
        if len(self._tail) + sum(map(len, self._lines)) > self._max_record_chars:
            self._record = list(self._lines)  # so that `line_num` names the record's last line so far
            raise csv.Error(f"a record longer than {self._max_record_chars:,} characters")

    # The reader's input: the complete lines so far. Running out is remembered, not final: csv.reader asks
    # its input again the next time it is asked for a record.
    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._lines:
            self._ran_out = True
            raise StopIteration
        line = self._lines.popleft()
        self._record.append(line)
        return line
