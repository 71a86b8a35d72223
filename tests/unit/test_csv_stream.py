"""The streamed CSV reader against csv.reader over the whole file, for any text and any way of cutting it."""

import csv
import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.kit.csv_stream import CsvStream


def whole_file(data: bytes) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    return [(reader.line_num, values) for values in reader]


def streamed(data: bytes, cuts: list[int], max_record_chars: int = 10_000) -> list[tuple[int, list[str]]]:
    stream = CsvStream(max_record_chars)
    records = []
    bounds = sorted({0, *(c % (len(data) + 1) for c in cuts), len(data)})
    for start, end in itertools.pairwise(bounds):
        records += stream.feed(data[start:end])
    records += stream.feed(b"", final=True)
    return records


# Text that is CSV or nearly so: quotes, separators and every kind of line end, in any order.
text = st.lists(st.sampled_from(["a", "é", ",", '"', "\r", "\n", "\r\n", " ", "€"]), max_size=80).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=text, bom=st.booleans(), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_cutting_reads_the_records_the_whole_file_holds(text: str, bom: bool, cuts: list[int]) -> None:
    data = ("\ufeff" if bom else "").encode() + text.encode()
    assert streamed(data, cuts) == whole_file(data)


def test_a_quoted_line_break_split_byte_by_byte() -> None:
    data = b'email,note\r\na@b.example,"two\r\nlines, one ""quote"""\r\nc@d.example,x'
    assert streamed(data, list(range(len(data)))) == whole_file(data)
    assert whole_file(data)[1] == (3, ["a@b.example", 'two\r\nlines, one "quote"'])


def test_a_record_longer_than_the_limit_is_refused_before_the_file_ends() -> None:
    stream = CsvStream(max_record_chars=100)
    assert list(stream.feed(b'email\n"open quote')) == [(1, ["email"])]
    with pytest.raises(csv.Error, match="longer than 100"):
        list(stream.feed(b"\n" + b"x" * 100))
    assert stream.line_num == 2


def test_bytes_that_are_not_utf_8_are_refused_as_they_arrive() -> None:
    stream = CsvStream(max_record_chars=100)
    with pytest.raises(UnicodeDecodeError):
        list(stream.feed(b"email\n\xff"))
