"""Reading a lead file: its encoding and byte order mark, delimiter, header and columns, and its
records with their own bytes kept (each is written back as it was read)."""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

# Header names recognised without --phone-column / --postcode-column, compared without case,
# accents, spaces, dashes or underscores ("Téléphone", "TEL" and "numéro" all match).
PHONE_HEADERS = frozenset(
    {"phone", "telephone", "tel", "mobile", "number", "numero", "phonenumber", "msisdn", "portable"}
)
POSTCODE_HEADERS = frozenset({"postcode", "codepostal", "cp", "zip", "zipcode", "postalcode"})
ADDED_COLUMNS = ("npv_verdict", "npv_callable", "npv_reasons", "npv_next_allowed_at", "npv_next_allowed_local")
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\t": "\t"}
SNIFF_LINES = 50

# One lead as read: the record without its line break, the phone cell, the postcode cell (None
# without a postcode column or when it is empty).
Row = tuple[str, str, str | None]


class ScrubUsage(Exception):
    """A problem with the arguments or the input file: exit 2, nothing written."""


def _normalised(header: str) -> str:
    text = unicodedata.normalize("NFKD", header.strip().casefold())
    return "".join(c for c in text if c.isalnum())


@dataclass
class LeadFile:
    path: Path
    binary: BinaryIO
    text: TextIO
    encoding: str  # codec name to write the output with
    bom: bool
    delimiter: str
    newline: str
    header: list[str]
    header_body: str  # the header line as read, without its line break
    phone: int
    postcode: int | None
    size: int
    lines: Iterator[str]  # the rest of the file, line by line
    head: list[str] = field(default_factory=list)
    blank_lines: int = 0  # skipped by `batches`

    @classmethod
    def open(cls, path: Path, args: argparse.Namespace) -> LeadFile:
        try:
            codec = codecs.lookup(args.encoding).name
        except LookupError:
            raise ScrubUsage(f"--encoding {args.encoding!r}: unknown encoding") from None
        if path.is_dir():
            raise ScrubUsage(f"{path}: is a directory, not a lead file")
        try:
            binary = path.open("rb")
        except FileNotFoundError:
            raise ScrubUsage(f"{path}: no such file") from None
        except OSError as error:
            raise ScrubUsage(f"{path}: cannot be read ({error.strerror})") from None
        try:
            return cls._read_header(path, binary, codec, args)
        except BaseException:
            binary.close()
            raise

    @classmethod
    def _read_header(cls, path: Path, binary: BinaryIO, codec: str, args: argparse.Namespace) -> LeadFile:
        bom = binary.read(3) == codecs.BOM_UTF8
        if bom and codec != "utf-8":
            raise ScrubUsage(f"{path}: starts with a UTF-8 byte order mark but --encoding {args.encoding} was given")
        binary.seek(3 if bom else 0)
        text = io.TextIOWrapper(binary, encoding=codec, errors="strict", newline="")
        head = []
        try:
            for line in text:
                head.append(line)
                if len(head) >= SNIFF_LINES:
                    break
        except UnicodeDecodeError as error:
            raise ScrubUsage(decode_problem(path, codec, error, len(head) + 1)) from None
        while head and not head[0].strip():
            head.pop(0)  # blank lines before the header
        if not head:
            raise ScrubUsage(f"{path}: empty file (a header line and leads are expected)")
        delimiter = DELIMITERS[args.delimiter] if args.delimiter else sniff(head)
        header = next(csv.reader([head[0]], delimiter=delimiter))
        header_body = head[0].rstrip("\r\n")
        newline = "\r\n" if head[0].endswith("\r\n") else "\n"
        clash = [name for name in header if name.strip() in ADDED_COLUMNS]
        if clash:
            raise ScrubUsage(f"{path}: already has {', '.join(clash)}: scrub the original lead file")
        phone = _column(header, args.phone_column, PHONE_HEADERS, "--phone-column", path)
        if phone is None:
            found = ", ".join(repr(name) for name in header)
            raise ScrubUsage(f"{path}: no phone column found among {found}: name it with --phone-column")
        postcode = None
        if not args.no_postcode:
            postcode = _column(header, args.postcode_column, POSTCODE_HEADERS, "--postcode-column", path)
        if postcode == phone:
            raise ScrubUsage(f"{path}: the phone and postcode columns are the same column")
        lines = _chain(head[1:], text)
        return cls(
            path, binary, text, codec, bom, delimiter, newline, header, header_body, phone, postcode,
            path.stat().st_size, lines,
        )  # fmt: skip

    def close(self) -> None:
        self.binary.close()

    def position(self) -> int:
        """Bytes read so far (within one buffer): for the progress bar."""
        return self.binary.tell()

    def batches(self, size: int) -> Iterator[list[Row]]:
        """The leads in lists of `size`, blank lines skipped (and counted in `blank_lines`)."""
        raw: list[str] = []
        reader = csv.reader(_captured(self.lines, raw), delimiter=self.delimiter)
        phone, postcode = self.phone, self.postcode
        batch: list[Row] = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as error:
                raise ScrubUsage(decode_problem(self.path, self.encoding, error, reader.line_num + 1)) from None
            except csv.Error as error:
                raise ScrubUsage(f"{self.path}: line {reader.line_num}: {error}") from None
            body = raw[0] if len(raw) == 1 else "".join(raw)
            raw.clear()
            number = row[phone] if phone < len(row) else ""
            if not number.strip() and not any(cell.strip() for cell in row):
                self.blank_lines += 1
                continue
            code = row[postcode] if postcode is not None and postcode < len(row) else None
            batch.append((_strip_line_break(body), number, code or None))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _chain(head: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _captured(lines: Iterator[str], raw: list[str]) -> Iterator[str]:
    """Feed csv.reader line by line, keeping the text of the record being read in `raw` (the
    reader asks for no line beyond the end of its current record)."""
    for line in lines:
        raw.append(line)
        yield line


def _strip_line_break(body: str) -> str:
    if body.endswith("\n"):
        return body[:-2] if body.endswith("\r\n") else body[:-1]
    return body[:-1] if body.endswith("\r") else body


def decode_problem(path: Path, codec: str, error: UnicodeDecodeError, line: int | str) -> str:
    byte = error.object[error.start : error.start + 1].hex() if isinstance(error.object, bytes) else "?"
    hint = " (a file saved by Excel on Windows is usually cp1252: give --encoding cp1252)" if codec == "utf-8" else ""
    return f"{path}: not {codec} near line {line} (byte 0x{byte}){hint}"


def sniff(lines: list[str]) -> str:
    """The delimiter that splits the header and the first lines into the same number of fields,
    the most fields winning; `,` when nothing splits (a single column)."""
    best, best_score = ",", (False, 1)
    sample = [line for line in lines if line.strip()]
    for delimiter in (";", ",", "\t"):
        try:
            counts = [len(row) for row in csv.reader(sample, delimiter=delimiter) if row]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        # Records with embedded line breaks make a few short rows: "consistent" is most rows.
        consistent = sum(count == counts[0] for count in counts) * 10 >= len(counts) * 9
        score = (consistent, counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _column(header: list[str], wanted: str | None, known: frozenset[str], option: str, path: Path) -> int | None:
    """The column named `wanted`, else the one header among `known` names, else None."""
    if wanted is not None:
        matches = [i for i, name in enumerate(header) if name.strip().casefold() == wanted.strip().casefold()]
        if not matches:
            found = ", ".join(repr(name) for name in header)
            raise ScrubUsage(f"{path}: no column {wanted!r} ({option}); the header has {found}")
        return matches[0]
    matches = [i for i, name in enumerate(header) if _normalised(name) in known]
    if len(matches) > 1:
        names = ", ".join(repr(header[i]) for i in matches)
        raise ScrubUsage(f"{path}: several columns could be meant ({names}): choose one with {option}")
    return matches[0] if matches else None
