"""Reading contact CSVs exactly, or not at all: the desired membership a person uploads, the
export CC hands back, and the rejected rows handed back to the person.

Pure functions over files and lines, no HTTP and no models. What a cell means for CC is in
:mod:`.bulk_fields`; what the diff and the plan make of the result is in :mod:`.bulk_plan`.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from integrations.constant_contact.limits import (
    CUSTOM_FIELD_MAX_LENGTH,
    CUSTOM_FIELDS_MAX,
    IMPORT_EMAIL_MAX_LENGTH,
    IMPORT_FIELD_MAX_LENGTHS,
)
from integrations.errors import PortalError
from integrations.services.bulk_fields import (
    CONTACT_ID_ALIASES,
    EMAIL_ALIASES,
    FORMULA_PREFIXES,
    Column,
    column_key,
    email_problem,
    is_address,
    neutralise_formula,
    normalise_header,
    row_fields,
)
from integrations.services.private_files import private_opener

# --- Reading limits ---------------------------------------------------------------------------

_SNIFF_BYTES = 64 * 1024
# A physical line longer than this is not a contact row (the widest legal row is a few KB).
_MAX_LINE_CHARS = 1024 * 1024
# Share of control bytes (other than tab, CR, LF, FF) above which a file is called binary.
_MAX_CONTROL_SHARE = 0.01
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SAVE_AS_HINT = 'save it from your spreadsheet as "CSV UTF-8 (Comma delimited)" and upload again'
# Codec error handler for the second pass that locates an undecodable line: bad bytes become NUL.
_MARK_UNDECODABLE = "ccportal.bulk_csv.mark_undecodable"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return "\x00", exc.end
    raise exc


codecs.register_error(_MARK_UNDECODABLE, _mark_undecodable)


# Something that reads like an address inside a refused cell.
_ADDRESS_IN_TEXT = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


class BulkInputError(PortalError):
    """The desired membership cannot be used; nothing was sent to CC."""


class CsvRejected(BulkInputError):
    """The whole file is unusable. ``str(exc)`` is one human-readable line for the UI/CLI."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        # One line, always: the message is shown as-is in forms, logs and the CLI.
        self.message = " ".join(message.split())
        self.line = line
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class RejectedRow:
    """One data row that was skipped; ``line`` is the physical line where the record starts."""

    line: int
    email: str
    reason: str


@dataclass
class DesiredSet:
    """The validated desired membership of a list.

    ``contacts`` maps each lower-cased, valid email to its non-empty CC ``import_data`` fields
    (email not included); every value already fits CC's limits and is formula-neutralised.
    """

    contacts: dict[str, dict[str, str]]
    # Non-blank data rows, including the rejected and duplicate ones.
    rows_read: int = 0
    # Rows whose email was already in ``contacts``.
    duplicates: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    # Named header cells that map to no CC field, in file order.
    ignored_columns: list[str] = field(default_factory=list)
    # The header as read (trimmed), in file order.
    columns: list[str] = field(default_factory=list)
    # Header cell -> CC key ("email", "first_name", "cf:Shoe size", ...), for the columns used.
    column_map: dict[str, str] = field(default_factory=dict)
    # Real addresses whose row was rejected anyway (a field too long, a bad date, an address
    # over the import's 50 characters...). The person is meant to be on the list, so a replace
    # sync must not remove them: pass this as ``membership_diff(..., keep=...)``.
    rejected_valid_emails: set[str] = field(default_factory=set)
    # Addresses that appear in refused rows ("Ann <ann@example.com>"): a plan that would remove
    # one of them asks a person first.
    mentioned_emails: set[str] = field(default_factory=set)
    encoding: str = "utf-8"
    delimiter: str = ","


# --- Desired membership CSV --------------------------------------------------------------------


def desired_from_csv(
    path: Path, *, max_bytes: int = 64 * 1024 * 1024, max_rows: int = 1_000_000
) -> DesiredSet:
    """Read and validate a desired-membership CSV.

    Guarantees:
    - the file is streamed: it is never read whole, and only one row is held at a time
      besides the collapsed result;
    - the whole file is refused with ``CsvRejected`` (one-line message, ``line`` when known) when
      it is larger than ``max_bytes`` (checked before reading), empty, binary, not UTF-8 (UTF-8
      with or without BOM, or UTF-16 with a BOM), has no email column, has more than 25 ``cf:``
      columns, two columns for the same CC field, or more than ``max_rows`` data rows;
    - a bad row is never fatal: it lands in ``rejected`` with the physical line where the record
      starts (quoted values may span lines) and every reason found;
    - every email in ``contacts`` is trimmed, lower-cased, valid and at most 50 characters;
      every field value is trimmed, non-empty, within CC's ``JsonImportContact`` limit and
      prefixed with ``'`` when it starts with ``= + - @``, tab or CR;
    - duplicate emails (case-insensitive) are collapsed into the first occurrence; a later one
      only fills fields the earlier left empty.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CsvRejected(f"cannot read the file: {exc.strerror or exc}.") from None
    if size > max_bytes:
        raise CsvRejected(
            f"the file is {_human_size(size)} ({size:,} bytes); "
            f"the limit is {_human_size(max_bytes)} ({max_bytes:,} bytes)."
        )
    if size == 0:
        raise CsvRejected("the file is empty; it needs a header row with an email column.")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise CsvRejected(f"cannot read the file: {exc.strerror or exc}.") from None
    with raw:
        encoding = _detect_encoding(raw.read(_SNIFF_BYTES))
        raw.seek(0)
        with io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="") as text:
            lines = _PhysicalLines(text)
            try:
                return _desired_from_lines(lines, max_rows=max_rows, encoding=encoding)
            except UnicodeDecodeError:
                pass
    # The decoder fails a whole buffer at a time, so a second pass finds the exact line.
    line = _first_undecodable_line(path, encoding)
    if encoding == "utf-16":
        raise CsvRejected(f"line {line:,} is not valid UTF-16 text; {_SAVE_AS_HINT}.", line=line)
    raise CsvRejected(
        f"line {line:,} is not UTF-8 text (the file was probably saved as Windows/Latin-1 "
        f"text); {_SAVE_AS_HINT}.",
        line=line,
    )


def _detect_encoding(sample: bytes) -> str:
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if sample.startswith(_ZIP_MAGIC):
        raise CsvRejected(
            f"this is an Excel workbook (.xlsx) or another zip file, not a text CSV file; "
            f"{_SAVE_AS_HINT}."
        )
    if sample.startswith(_OLE_MAGIC):
        raise CsvRejected(
            f"this is an old Excel workbook (.xls), not a text CSV file; {_SAVE_AS_HINT}."
        )
    control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if b"\x00" in sample or control > len(sample) * _MAX_CONTROL_SHARE:
        raise CsvRejected(
            f"this is not a text CSV file (it contains binary data); {_SAVE_AS_HINT}."
        )
    # utf-8-sig reads UTF-8 with or without a BOM, and drops the BOM.
    return "utf-8-sig"


class _PhysicalLines:
    """Physical lines (terminators kept, as ``csv`` needs), refusing NULs and endless lines."""

    def __init__(self, text: TextIO) -> None:
        self._read = partial(text.readline, _MAX_LINE_CHARS)
        self.number = 0

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        line = self._read()
        if not line:
            raise StopIteration
        self.number += 1
        if "\x00" in line:
            raise CsvRejected(
                f"line {self.number:,} contains a NUL byte: this is not a text CSV file; "
                f"{_SAVE_AS_HINT}.",
                line=self.number,
            )
        if len(line) == _MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise CsvRejected(
                f"line {self.number:,} is longer than {_MAX_LINE_CHARS:,} characters; "
                "this does not look like a contact CSV file.",
                line=self.number,
            )
        return line


def _first_undecodable_line(path: Path, encoding: str) -> int:
    """The 1-based physical line holding the first byte sequence ``encoding`` cannot decode.

    Lines are split exactly as in the first pass; undecodable bytes become a NUL, which no line
    of the first pass could contain.
    """
    with (
        path.open("rb") as raw,
        io.TextIOWrapper(raw, encoding=encoding, errors=_MARK_UNDECODABLE, newline="") as text,
    ):
        number = 0
        for number, line in enumerate(iter(partial(text.readline, _MAX_LINE_CHARS), ""), 1):
            if "\x00" in line:
                return number
        return number + 1  # pragma: no cover - only if the file changed between the passes


def _sniff_delimiter(header_line: str) -> str:
    # Excel in many European locales saves "CSV" with semicolons; "Unicode text" uses tabs.
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _quoted_list(names: Sequence[str], limit: int = 15) -> str:
    shown = ", ".join(f'"{n}"' for n in names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _header_columns(names: list[str]) -> tuple[int, list[Column], list[str], dict[str, str]]:
    email_index: int | None = None
    columns: list[Column] = []
    ignored: list[str] = []
    column_map: dict[str, str] = {}
    owner: dict[str, str] = {}
    for index, name in enumerate(names):
        key = column_key(name)
        if key is None:
            if name:
                ignored.append(name)
            continue
        if key in owner:
            raise CsvRejected(
                f'columns "{owner[key]}" and "{name}" both hold {key}; keep only one of them.'
            )
        owner[key] = name
        column_map[name] = key
        if key == "email":
            email_index = index
        elif key.startswith("cf:"):
            columns.append(Column(index, name, key, CUSTOM_FIELD_MAX_LENGTH))
        else:
            columns.append(Column(index, name, key, IMPORT_FIELD_MAX_LENGTHS.get(key, 0)))
    if email_index is None:
        raise CsvRejected(
            f"no email column; the columns found are {_quoted_list(names)}. "
            'Name the column with the addresses "email".'
        )
    custom = [c.name for c in columns if c.key.startswith("cf:")]
    if len(custom) > CUSTOM_FIELDS_MAX:
        raise CsvRejected(
            f"the file has {len(custom)} custom-field (cf:) columns; Constant Contact accepts "
            f"at most {CUSTOM_FIELDS_MAX} per contact."
        )
    return email_index, columns, ignored, column_map


def _desired_from_lines(lines: _PhysicalLines, *, max_rows: int, encoding: str) -> DesiredSet:
    skipped = 0  # blank lines before the header
    for first in lines:
        if first.strip():
            break
        skipped += 1
    else:
        raise CsvRejected("the file is empty; it needs a header row with an email column.")
    delimiter = _sniff_delimiter(first)
    # strict: a quote left open at the end of the file, or text after a closing quote, is an
    # error rather than a value that silently takes in the rest of the file.
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        if _never_closed(exc, lines_read=reader.line_num):
            problem = "has an unclosed double quote"
        else:
            problem = f"is malformed ({exc})"
        raise CsvRejected(
            f"line {skipped + 1}: the header row {problem}.", line=skipped + 1
        ) from None
    if reader.line_num > 1:
        # An open quote in the header swallows the lines after it into one "column name".
        raise CsvRejected(
            f"line {skipped + 1}: the header row has an unclosed double quote.",
            line=skipped + 1,
        )
    names = [cell.strip().lstrip("\ufeff").strip() for cell in header]
    email_index, columns, ignored, column_map = _header_columns(names)
    width = len(names)

    contacts: dict[str, dict[str, str]] = {}
    rejected: list[RejectedRow] = []
    rejected_valid: set[str] = set()
    mentioned: set[str] = set()
    rows_read = duplicates = 0
    consumed = reader.line_num  # physical lines of the file the reader has taken, minus skipped
    while True:
        start = skipped + consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if _never_closed(exc, lines_read=reader.line_num - consumed):
                message = (
                    f"line {start:,}: a double quote opened in this row is never closed, so "
                    "every line after it would be read as part of one value; close the quote "
                    "or remove it, then upload again."
                )
            else:
                message = f"line {start:,}: the CSV is malformed ({exc}); check its quotes."
            raise CsvRejected(message, line=start) from None
        if reader.line_num - consumed > 1:
            _refuse_swallowed_rows(
                row, start=start, end=skipped + reader.line_num, delimiter=delimiter
            )
        consumed = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank line, or a row of empty cells a spreadsheet left behind
        rows_read += 1
        if rows_read > max_rows:
            raise CsvRejected(
                f"the file has more than {max_rows:,} data rows; the limit is {max_rows:,}.",
                line=start,
            )
        raw_email = row[email_index].strip() if email_index < len(row) else ""
        email = raw_email.lower()
        problems: list[str] = []
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            problems.append(
                f"row has {len(row)} values but the header has {width} columns "
                "(a comma inside an unquoted value?)"
            )
        email_refused = email_problem(email)
        if email_refused:
            problems.append(email_refused)
        fields, field_problems = row_fields(row, columns)
        problems += field_problems
        if problems:
            rejected.append(RejectedRow(start, raw_email, "; ".join(problems)))
            mentioned.update(match.lower() for match in _ADDRESS_IN_TEXT.findall(raw_email))
            # A real address that only the import refuses (a field, or longer than the JSON
            # import's 50 characters though CC contacts may have 80) may already be a member.
            too_long_only = len(email) > IMPORT_EMAIL_MAX_LENGTH and not email.startswith(
                FORMULA_PREFIXES
            )
            if email_refused is None or (too_long_only and is_address(email)):
                rejected_valid.add(email)
            continue
        existing = contacts.get(email)
        if existing is None:
            contacts[email] = fields
        else:
            duplicates += 1
            for key, value in fields.items():
                existing.setdefault(key, value)
    return DesiredSet(
        contacts=contacts,
        rows_read=rows_read,
        duplicates=duplicates,
        rejected=rejected,
        ignored_columns=ignored,
        columns=names,
        column_map=column_map,
        rejected_valid_emails=rejected_valid,
        mentioned_emails=mentioned,
        encoding="utf-16" if encoding == "utf-16" else "utf-8",
        delimiter=delimiter,
    )


def _never_closed(error: csv.Error, *, lines_read: int) -> bool:
    """Whether ``error`` is csv's way of saying a quoted value ran on without a closing quote.

    A quote left open reads on to the end of the file ("unexpected end of data") or, in a big
    file, until the value passes csv's field size limit (128 KiB unless the process raised it).
    The limit also stops a value that is merely huge on one line; only a value that ran across
    lines (``lines_read`` > 1 for the record) is the open quote.
    """
    message = str(error)
    if "unexpected end of data" in message:
        return True
    return "field larger than field limit" in message and lines_read > 1


def _refuse_swallowed_rows(row: list[str], *, start: int, end: int, delimiter: str) -> None:
    """A record spanning lines ``start``-``end`` is one quoted value with line breaks in it.
    That is fine for a two-line company name, but when a line inside the value looks like a
    row of its own (it holds the delimiter or an address), an unclosed double quote has
    swallowed rows: reading on would drop them from the desired set, and a replace would
    remove them from the list. Such a file is refused, naming the line the quote opens."""
    for cell in row:
        inner = cell.splitlines()[1:]
        looks_like_row = next((text for text in inner if delimiter in text or "@" in text), None)
        if looks_like_row is not None:
            raise CsvRejected(
                f"line {start:,}: a double quote opened here runs on to line {end:,} and takes "
                f"in what look like rows ({looks_like_row.strip()[:60]!r}); close the quote "
                "or remove it, then upload again.",
                line=start,
            )


def _human_size(size: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


# --- CC export CSV -----------------------------------------------------------------------------


def _terminated(lines: Iterable[str]) -> Iterator[str]:
    # ``requests``' iter_lines() strips terminators; without them csv would glue the lines of a
    # quoted multi-line value together with nothing in between.
    for line in lines:
        yield line if line.endswith(("\n", "\r")) else line + "\n"


def current_from_export_csv(lines: Iterable[str]) -> dict[str, str]:
    """Map each member's lower-cased email to its contact id from CC's contact-export CSV.

    Streams ``lines`` (with or without terminators, e.g. ``response.iter_lines(
    decode_unicode=True)`` or an open text file). Headers are matched case-insensitively: the
    email column is any of ``EMAIL_ALIASES`` ("Email Address", "email", ...), the id column any
    of "Contact Id", "Contact ID", "contact_id", "id". The id is "" when the export has no id
    column. Rows without an email (SMS-only contacts) are skipped. An empty export is an empty
    list; an export with rows but no email column raises ``CsvRejected``.
    """
    reader = csv.reader(_terminated(lines))
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = row
            break
    if header is None:
        return {}
    names = [cell.strip().lstrip("\ufeff").strip() for cell in header]
    normalised = [normalise_header(name) for name in names]
    email_index = next((i for i, n in enumerate(normalised) if n in EMAIL_ALIASES), None)
    if email_index is None:
        raise CsvRejected(f"the export has no email column; its columns are {_quoted_list(names)}.")
    id_index = next((i for i, n in enumerate(normalised) if n in CONTACT_ID_ALIASES), None)

    current: dict[str, str] = {}
    try:
        for row in reader:
            if email_index >= len(row):
                continue
            email = row[email_index].strip().lower()
            if not email:
                continue
            contact_id = ""
            if id_index is not None and id_index < len(row):
                contact_id = row[id_index].strip()
            if not current.get(email):
                current[email] = contact_id
    except csv.Error as exc:
        raise CsvRejected(
            f"the export is malformed near line {reader.line_num:,} ({exc}).", line=reader.line_num
        ) from None
    return current


# --- Rejected rows -----------------------------------------------------------------------------

REJECTED_HEADER = ("line", "email", "reason")


def rejected_rows_write(rows: Iterable[RejectedRow], out: TextIO) -> int:
    """Write ``line,email,reason`` CSV to ``out``, formula-neutralised; return the row count."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REJECTED_HEADER)
    count = 0
    for row in rows:
        writer.writerow((row.line, neutralise_formula(row.email), neutralise_formula(row.reason)))
        count += 1
    return count


def rejected_rows_csv(rows: Iterable[RejectedRow]) -> str:
    """The rejected rows as CSV text (see ``rejected_rows_write``)."""
    out = io.StringIO()
    rejected_rows_write(rows, out)
    return out.getvalue()


def desired_csv_from_export(export_path: Path, desired_path: Path) -> None:
    """Write the members of a CC export as a desired-membership CSV (email and names), streamed.

    The export's columns are recognised by the same names as an upload's (``EMAIL_ALIASES``,
    ``column_key``), so an export the sync can diff is an export it can copy.
    """
    with (
        export_path.open(encoding="utf-8", newline="") as src,
        open(desired_path, "w", encoding="utf-8", newline="", opener=private_opener) as dst,
    ):
        reader = csv.reader(src)
        header = next(reader, [])
        keys = [column_key(cell.strip().lstrip("\ufeff")) for cell in header]
        wanted = ("email", "first_name", "last_name")
        where = {key: keys.index(key) for key in wanted if key in keys}
        writer = csv.writer(dst)
        writer.writerow(wanted)
        if "email" not in where:
            return
        for row in reader:
            values = [row[where[k]] if k in where and where[k] < len(row) else "" for k in wanted]
            if values[0].strip():
                writer.writerow(values)
