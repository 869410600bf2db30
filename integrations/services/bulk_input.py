"""Input and planning for a list sync: "make CC list L contain exactly these people".

Pure functions, no HTTP and no models. The job engine calls them in this order:

1. ``desired_from_csv`` reads and validates the uploaded desired-membership CSV;
2. ``current_from_export_csv`` parses CC's contact export of the list;
3. ``membership_diff`` compares the two sets;
4. ``import_chunks`` / ``chunk_sizes`` cut the contacts to import into JSON-import payloads;
5. ``sync_plan`` picks the removal strategy and counts the calls;
6. ``rejected_rows_csv`` hands the rejected rows back to the user.

Limits come from CC's v3 spec (``JsonImportContact``, ``ContactsJsonImport``,
``ListActivityRemoveContacts``) and the bulk-activity docs; see shared/cc-api/REFERENCE.md §5.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from django.core.validators import EmailValidator

__all__ = [
    "COLUMN_ALIASES",
    "CUSTOM_FIELDS_MAX",
    "EMAIL_ALIASES",
    "EMAIL_MAX_LENGTH",
    "FIELD_MAX_LENGTHS",
    "IMPORT_MAX_BYTES",
    "IMPORT_MAX_CONTACTS",
    "REMOVE_BATCH_MAX",
    "CsvRejected",
    "DesiredSet",
    "MembershipDiff",
    "RejectedRow",
    "SyncPlan",
    "chunk_sizes",
    "current_from_export_csv",
    "desired_from_csv",
    "import_chunks",
    "import_payload",
    "membership_diff",
    "neutralise_formula",
    "rejected_rows_csv",
    "rejected_rows_write",
    "sync_plan",
]

# --- CC limits ------------------------------------------------------------------------------

# JsonImportContact.email maxLength (ContactPost allows 80, but the bulk import is what we use).
EMAIL_MAX_LENGTH = 50
# "Each contact can contain up to 25 different custom fields." (JsonImportContact cf:*)
CUSTOM_FIELDS_MAX = 25
CUSTOM_FIELD_MAX_LENGTH = 255
# contacts_json_import: "≤ 40,000 contacts" and "< 4 MB" per payload (beyond 4 MB CC silently
# drops the rest, so we stay well under rather than at 4 MiB).
IMPORT_MAX_CONTACTS = 40_000
IMPORT_MAX_BYTES = 4_000_000
# remove_list_memberships: source.contact_ids takes at most 500 ids per call.
REMOVE_BATCH_MAX = 500

_SHORT, _LONG = 50, 255
# JsonImportContact string properties and their maxLength. The spec spells one key
# "home country" (with a space); the intended key is home_country.
FIELD_MAX_LENGTHS: dict[str, int] = {
    "first_name": _SHORT,
    "last_name": _SHORT,
    "job_title": _SHORT,
    "company_name": _SHORT,
    "phone": _SHORT,
    "home_phone": _SHORT,
    "work_phone": _SHORT,
    "mobile_phone": _SHORT,
    "other_phone": _SHORT,
    "street": _LONG,
    "street2": _LONG,
    "city": _SHORT,
    "state": _SHORT,
    "zip": _SHORT,
    "country": _SHORT,
    **{
        f"{kind}_{part}": _LONG if part.startswith("street") else _SHORT
        for kind in ("home", "work", "other")
        for part in ("street", "street2", "city", "state", "zip", "country")
    },
}
# Typed JsonImportContact properties, validated by format rather than length.
_BIRTHDAY_MONTH, _BIRTHDAY_DAY, _ANNIVERSARY = "birthday_month", "birthday_day", "anniversary"
_INTEGER_FIELDS = frozenset({_BIRTHDAY_MONTH, _BIRTHDAY_DAY})

# --- Column names -----------------------------------------------------------------------------
# Header cells are compared after _normalise_header: lower-cased, every run of characters other
# than a-z/0-9 turned into "_" ("E-mail" -> "e_mail", "Zip/Postal Code" -> "zip_postal_code").

EMAIL_ALIASES: frozenset[str] = frozenset(
    {"email", "email_address", "e_mail", "emailaddress", "e_mail_address"}
)

_ADDRESS_ALIASES: dict[str, tuple[str, ...]] = {
    "street": (
        "street",
        "street1",
        "street_1",
        "street_address",
        "street_address_line_1",
        "address",
        "address1",
        "address_1",
        "address_line_1",
    ),
    "street2": (
        "street2",
        "street_2",
        "street_address_line_2",
        "address2",
        "address_2",
        "address_line_2",
    ),
    "city": ("city", "town"),
    "state": ("state", "province", "state_province"),
    "zip": ("zip", "zip_code", "zipcode", "postal_code", "postcode", "zip_postal_code"),
    "country": ("country",),
}

# CC import_data key -> accepted (normalised) header spellings.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name", "firstname", "first", "given_name"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name"),
    "job_title": ("job_title", "jobtitle"),
    "company_name": ("company_name", "company", "companyname", "organization", "organisation"),
    "phone": ("phone", "phone_number", "phonenumber"),
    "home_phone": ("home_phone", "home_phone_number"),
    "work_phone": ("work_phone", "work_phone_number", "business_phone"),
    "mobile_phone": ("mobile_phone", "mobile_phone_number", "mobile", "cell_phone", "cell"),
    "other_phone": ("other_phone", "other_phone_number"),
    **_ADDRESS_ALIASES,
    **{
        f"{kind}_{key}": tuple(f"{kind}_{alias}" for alias in aliases)
        for kind in ("home", "work", "other")
        for key, aliases in _ADDRESS_ALIASES.items()
    },
    _BIRTHDAY_MONTH: (_BIRTHDAY_MONTH,),
    _BIRTHDAY_DAY: (_BIRTHDAY_DAY,),
    _ANNIVERSARY: (_ANNIVERSARY,),
}

_HEADER_TO_KEY: dict[str, str] = {
    alias: key for key, aliases in COLUMN_ALIASES.items() for alias in aliases
} | dict.fromkeys(EMAIL_ALIASES, "email")

_CONTACT_ID_ALIASES = frozenset({"contact_id", "contactid", "id"})

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

# OWASP "CSV injection": a cell starting with one of these is run as a formula by Excel,
# LibreOffice and Google Sheets when someone opens an export of it.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# Django's EmailValidator grammar, compiled eagerly (its lazy patterns cost half the parse time
# of a big file), without the forms CC's import refuses: quoted local parts, [IP] literals and
# bare "localhost"-style domains.
_EMAIL_LOCAL_PART = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]+)*\Z", re.IGNORECASE
)
_EMAIL_DOMAIN = re.compile(
    EmailValidator.hostname_re + EmailValidator.domain_re + EmailValidator.tld_no_fqdn_re + r"\Z",
    re.IGNORECASE,
)

_MONTH_FIRST_DATE = re.compile(r"(\d{1,2})([/-])(\d{1,2})\2(\d{4})", re.ASCII)
_YEAR_FIRST_DATE = re.compile(r"(\d{4})([/-])(\d{1,2})\2(\d{1,2})", re.ASCII)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Codec error handler for the second pass that locates an undecodable line: bad bytes become NUL.
_MARK_UNDECODABLE = "ccportal.bulk_input.mark_undecodable"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return "\x00", exc.end
    raise exc


codecs.register_error(_MARK_UNDECODABLE, _mark_undecodable)


class CsvRejected(Exception):
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
    encoding: str = "utf-8"
    delimiter: str = ","


@dataclass(frozen=True)
class MembershipDiff:
    """What must change for the list to hold exactly the desired set.

    ``removes`` holds contact ids when ``removes_by_id`` (every member to remove had one in the
    export), otherwise emails; ``remove_emails`` always holds the emails, in the same order.
    """

    mode: str
    adds: list[str]
    removes: list[str]
    unchanged: int
    removes_by_id: bool = True
    remove_emails: list[str] = field(default_factory=list)
    # Current members outside the desired set left in place because they were in ``keep``.
    kept: int = 0


# --- Formula neutralisation --------------------------------------------------------------------


_PLAIN_NUMBER = re.compile(r"^[+-]?[\d\s().-]+$")


def neutralise_formula(value: str) -> str:
    """Return ``value`` prefixed with ``'`` when a spreadsheet would run it as a formula.

    Phone numbers and other plain numbers ("+1 555-0100", "-3") stay as they are: a
    spreadsheet evaluates them to themselves, and CC must receive them unaltered.
    """
    if value.startswith(_FORMULA_PREFIXES) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


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


def _normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _column_key(name: str) -> str | None:
    """The CC ``import_data`` key for a header cell ("email" for the email), or None."""
    if name[:3].lower() == "cf:":
        custom = name[3:].strip()
        return f"cf:{custom}" if custom else None
    return _HEADER_TO_KEY.get(_normalise_header(name))


def _quoted_list(names: Sequence[str], limit: int = 15) -> str:
    shown = ", ".join(f'"{n}"' for n in names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class _Column:
    index: int
    name: str
    key: str
    max_length: int


def _header_columns(names: list[str]) -> tuple[int, list[_Column], list[str], dict[str, str]]:
    email_index: int | None = None
    columns: list[_Column] = []
    ignored: list[str] = []
    column_map: dict[str, str] = {}
    owner: dict[str, str] = {}
    for index, name in enumerate(names):
        key = _column_key(name)
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
            columns.append(_Column(index, name, key, CUSTOM_FIELD_MAX_LENGTH))
        else:
            columns.append(_Column(index, name, key, FIELD_MAX_LENGTHS.get(key, 0)))
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


def _email_problem(email: str) -> str | None:
    """Why CC's import would refuse this (trimmed, lower-cased) email, or None."""
    if not email:
        return "email is empty"
    if email.startswith(_FORMULA_PREFIXES):
        return f"email starts with {email[0]!r}, like a spreadsheet formula"
    if len(email) > EMAIL_MAX_LENGTH:
        return (
            f"email is {len(email)} characters long; Constant Contact's import accepts at most "
            f"{EMAIL_MAX_LENGTH}"
        )
    if not _is_address(email):
        return "email is not a valid address"
    return None


def _is_address(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and _EMAIL_LOCAL_PART.match(local) and _EMAIL_DOMAIN.match(domain))


def _typed_value(key: str, name: str, value: str) -> tuple[str, str | None]:
    """(normalised value, problem) for birthday_month/birthday_day/anniversary."""
    if key in _INTEGER_FIELDS:
        top = 12 if key == _BIRTHDAY_MONTH else 31
        if value.isascii() and value.isdigit() and 1 <= int(value) <= top:
            return str(int(value)), None
        return value, f'"{name}" must be a whole number from 1 to {top}, not {value!r}'
    # anniversary: MM/DD/YYYY, M/D/YYYY, YYYY/MM/DD, YYYY/M/D, YYYY-MM-DD, YYYY-M-D, M-D-YYYY,
    # M-DD-YYYY (JsonImportContact.anniversary).
    if match := _MONTH_FIRST_DATE.fullmatch(value):
        month, day, year = int(match[1]), int(match[3]), int(match[4])
    elif match := _YEAR_FIRST_DATE.fullmatch(value):
        year, month, day = int(match[1]), int(match[3]), int(match[4])
    else:
        return value, (
            f'"{name}" {value!r} is not a date Constant Contact accepts '
            "(use YYYY-MM-DD or MM/DD/YYYY)"
        )
    try:
        dt.date(year, month, day)
    except ValueError:
        return value, f'"{name}" {value!r} is not a real date'
    return value, None


def _row_fields(row: list[str], columns: list[_Column]) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    problems: list[str] = []
    width = len(row)
    for column in columns:
        if column.index >= width:
            continue
        value = row[column.index].strip()
        if not value:
            continue
        if column.key in _INTEGER_FIELDS or column.key == _ANNIVERSARY:
            value, problem = _typed_value(column.key, column.name, value)
            if problem:
                problems.append(problem)
                continue
        else:
            neutral = neutralise_formula(value)
            if len(neutral) > column.max_length:
                added = "" if neutral == value else " (counting the ' added before a formula sign)"
                problems.append(
                    f'"{column.name}" is {len(neutral)} characters long{added}; '
                    f"Constant Contact accepts at most {column.max_length}"
                )
                continue
            value = neutral
        fields[column.key] = value
    if (_BIRTHDAY_MONTH in fields) != (_BIRTHDAY_DAY in fields):
        problems.append("birthday month and birthday day must be given together")
    elif _BIRTHDAY_MONTH in fields:
        month, day = int(fields[_BIRTHDAY_MONTH]), int(fields[_BIRTHDAY_DAY])
        if day > _DAYS_IN_MONTH[month - 1]:
            problems.append(f"birthday {month}/{day} is not a real date")
    return fields, problems


def _desired_from_lines(lines: _PhysicalLines, *, max_rows: int, encoding: str) -> DesiredSet:
    skipped = 0  # blank lines before the header
    for first in lines:
        if first.strip():
            break
        skipped += 1
    else:
        raise CsvRejected("the file is empty; it needs a header row with an email column.")
    delimiter = _sniff_delimiter(first)
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise CsvRejected(
            f"line {skipped + 1}: the header row is malformed ({exc}).", line=skipped + 1
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
    rows_read = duplicates = 0
    consumed = reader.line_num  # physical lines of the file the reader has taken, minus skipped
    while True:
        start = skipped + consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CsvRejected(
                f"line {start:,}: the CSV is malformed ({exc}); a double quote is probably "
                "left open.",
                line=start,
            ) from None
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
        email_problem = _email_problem(email)
        if email_problem:
            problems.append(email_problem)
        fields, field_problems = _row_fields(row, columns)
        problems += field_problems
        if problems:
            rejected.append(RejectedRow(start, raw_email, "; ".join(problems)))
            # A real address that only the import refuses (a field, or longer than the JSON
            # import's 50 characters though CC contacts may have 80) may already be a member.
            too_long_only = len(email) > EMAIL_MAX_LENGTH and not email.startswith(
                _FORMULA_PREFIXES
            )
            if email_problem is None or (too_long_only and _is_address(email)):
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
        encoding="utf-16" if encoding == "utf-16" else "utf-8",
        delimiter=delimiter,
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
    normalised = [_normalise_header(name) for name in names]
    email_index = next((i for i, n in enumerate(normalised) if n in EMAIL_ALIASES), None)
    if email_index is None:
        raise CsvRejected(f"the export has no email column; its columns are {_quoted_list(names)}.")
    id_index = next((i for i, n in enumerate(normalised) if n in _CONTACT_ID_ALIASES), None)

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


# --- Diff --------------------------------------------------------------------------------------

MODES = ("replace", "add")


def membership_diff(
    desired: Iterable[str],
    current: Mapping[str, str],
    *,
    mode: str,
    keep: Iterable[str] = (),
) -> MembershipDiff:
    """Set-wise difference between the desired emails and the list's current members.

    ``adds`` is sorted; ``removes`` follows the sorted emails of the members to remove. In mode
    "add" nothing is removed. In mode "replace" members outside ``desired`` are removed unless
    they are in ``keep`` (e.g. ``DesiredSet.rejected_valid_emails``). Emails are compared trimmed
    and lower-cased. Only membership is compared: unchanged members are not re-imported, so
    their CC fields stay as they are.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    wanted = {email.strip().lower() for email in desired}
    adds = sorted(wanted.difference(current))
    unchanged = len(wanted) - len(adds)
    if mode == "add":
        return MembershipDiff(mode=mode, adds=adds, removes=[], unchanged=unchanged)
    protected = {email.strip().lower() for email in keep}
    outside = sorted(email for email in current if email not in wanted)
    remove_emails = [email for email in outside if email not in protected]
    ids = [current[email] for email in remove_emails]
    by_id = all(ids)
    return MembershipDiff(
        mode=mode,
        adds=adds,
        removes=ids if by_id else list(remove_emails),
        unchanged=unchanged,
        removes_by_id=by_id,
        remove_emails=remove_emails,
        kept=len(outside) - len(remove_emails),
    )


# --- Import payloads -----------------------------------------------------------------------------

_JSON_SEPARATORS = (",", ":")
_PLACEHOLDER_LIST_IDS = ("00000000-0000-0000-0000-000000000000",)  # one 36-character UUID


def _dumps(value: object) -> str:
    # ensure_ascii (the default) makes the length in characters the length in bytes, and is the
    # larger of the two encodings, so a payload measured this way fits however it is sent.
    return json.dumps(value, separators=_JSON_SEPARATORS)


def import_payload(import_data: Sequence[Mapping[str, object]], list_ids: Sequence[str]) -> bytes:
    """The exact request body for ``POST /v3/activities/contacts_json_import``.

    Serialised the way ``import_chunks`` measures it; send these bytes (``data=``, with
    ``Content-Type: application/json``) rather than re-serialising with other separators.
    """
    return _dumps({"import_data": list(import_data), "list_ids": list(list_ids)}).encode("ascii")


def _import_item(email: str, fields: Mapping[str, str]) -> dict[str, object]:
    item: dict[str, object] = {"email": email}
    for key, value in fields.items():
        # JsonImportContact types the birthday month and day as integers.
        item[key] = int(value) if key in _INTEGER_FIELDS else value
    return item


def import_chunks(
    contacts: Mapping[str, Mapping[str, str]],
    emails: Iterable[str],
    *,
    max_contacts: int = IMPORT_MAX_CONTACTS,
    max_bytes: int = IMPORT_MAX_BYTES,
    list_ids: Sequence[str] = _PLACEHOLDER_LIST_IDS,
) -> Iterator[list[dict]]:
    """Yield ``import_data`` lists for ``emails``, in order, each item ``{"email", **fields}``.

    Guarantees: every chunk has 1..``max_contacts`` items, and ``import_payload(chunk,
    list_ids)`` is strictly shorter than ``max_bytes`` (by default the payload is measured with
    one 36-character list id). Sizes are added item by item; no chunk is serialised twice.
    Emails missing from ``contacts`` are imported with the email only; birthday month/day are
    sent as integers. A single contact that cannot fit at all raises ``ValueError``.
    """
    if max_contacts < 1:
        raise ValueError("max_contacts must be at least 1.")
    overhead = len(_dumps({"import_data": [], "list_ids": list(list_ids)}))
    chunk: list[dict] = []
    size = overhead
    for email in emails:
        item = _import_item(email, contacts.get(email, {}))
        item_size = len(_dumps(item))
        added = item_size + 1 if chunk else item_size  # the comma before every item but the first
        if chunk and (len(chunk) >= max_contacts or size + added >= max_bytes):
            yield chunk
            chunk, size, added = [], overhead, item_size
        if size + added >= max_bytes:
            raise ValueError(
                f"the contact {email!r} alone makes a {size + added:,}-byte payload; "
                f"the limit is {max_bytes:,}."
            )
        chunk.append(item)
        size += added
    if chunk:
        yield chunk


def chunk_sizes(
    contacts: Mapping[str, Mapping[str, str]],
    emails: Iterable[str],
    *,
    max_contacts: int = IMPORT_MAX_CONTACTS,
    max_bytes: int = IMPORT_MAX_BYTES,
    list_ids: Sequence[str] = _PLACEHOLDER_LIST_IDS,
) -> list[int]:
    """The item counts ``import_chunks`` would yield, holding one chunk at a time."""
    chunks = import_chunks(
        contacts, emails, max_contacts=max_contacts, max_bytes=max_bytes, list_ids=list_ids
    )
    return [len(chunk) for chunk in chunks]


# --- Plan ------------------------------------------------------------------------------------

STRATEGY_BATCHES = "batches"
STRATEGY_CLEAR_AND_REIMPORT = "clear_and_reimport"
EXPORT_CALLS = 2  # POST /v3/activities/contact_exports + GET /v3/contact_exports/{id}
# Activities are polled with GET /v3/activities?limit=500, which reports every activity of the
# account in one page, so a wave of parallel activities costs ~2 polls per page of 500, not 2
# per activity. Jobs take 30 s to 15+ min (REFERENCE §5.1).
POLLS_PER_WAVE = 2
ACTIVITIES_PER_POLL = 500
RESET_HINT = "after the 00:00 UTC reset"


def _wave_polls(activities: int) -> int:
    return POLLS_PER_WAVE * math.ceil(activities / ACTIVITIES_PER_POLL) if activities else 0


@dataclass(frozen=True)
class _Cost:
    import_calls: int
    removal_calls: int
    expected_polls: int

    @property
    def total(self) -> int:
        return EXPORT_CALLS + self.import_calls + self.removal_calls + self.expected_polls


@dataclass(frozen=True)
class SyncPlan:
    """How a sync will run and what it costs in API calls.

    ``total_calls`` covers the whole job including the export (``export_calls`` + its polls);
    ``calls_after_export`` is what is still needed once the export has been downloaded.
    ``calls_by_strategy`` holds the total for each strategy (None when it cannot be used).
    """

    adds: int
    removes: int
    unchanged: int
    strategy: str
    reason: str
    import_calls: int
    removal_calls: int
    export_calls: int
    expected_polls: int
    total_calls: int
    calls_after_export: int
    single_call_equivalent: int
    remaining_today: int
    per_day: int
    fits_today: bool
    days_needed: int
    earliest_fit: str | None
    calls_by_strategy: dict[str, int | None]

    def as_dict(self) -> dict[str, object]:
        """Every field plus ``summary``; only JSON types."""
        return {**asdict(self), "summary": self.summary()}

    def summary(self) -> list[str]:
        """Human-readable lines for the UI and the CLI."""
        lines = [f"Add {self.adds:,}, remove {self.removes:,}, leave {self.unchanged:,} unchanged."]
        if self.strategy == STRATEGY_CLEAR_AND_REIMPORT:
            lines.append(
                f"Strategy: empty the list in 1 call, then re-import the whole desired set in "
                f"{self.import_calls:,} import call(s) — {self.reason}."
            )
            lines.append(
                "The list is partly empty until the re-import finishes, and contacts who have "
                "unsubscribed cannot be added back."
            )
        else:
            lines.append(
                f"Strategy: {self.import_calls:,} import call(s) and {self.removal_calls:,} "
                f"removal call(s) of up to {REMOVE_BATCH_MAX} contacts — {self.reason}."
            )
        lines.append(
            f"API calls: {self.export_calls} export + {self.import_calls:,} import + "
            f"{self.removal_calls:,} removal + ~{self.expected_polls:,} status polls = "
            f"{self.total_calls:,} (one call per contact would take "
            f"{self.single_call_equivalent:,})."
        )
        if self.fits_today:
            lines.append(f"Fits today's remaining budget of {self.remaining_today:,} calls.")
        else:
            lines.append(
                f"Does not fit today's remaining budget of {self.remaining_today:,} calls; "
                f"runs {self.earliest_fit}."
            )
        return lines


def sync_plan(
    *,
    diff: MembershipDiff,
    desired_count: int,
    chunk_sizes_adds: list[int],
    chunk_sizes_all: list[int],
    remaining_today: int,
    per_day: int,
) -> SyncPlan:
    """Choose how to remove members, and count the calls.

    - "batches": import the adds, remove members in ``ceil(removes / 500)`` calls of contact
      ids; adds and removals touch different contacts, so they run as one wave.
    - "clear_and_reimport": one ``remove_list_memberships`` with ``source.list_ids=[L]``, wait
      for it (CC does not run activities in submission order), then import the whole desired
      set in ``len(chunk_sizes_all)`` calls.

    The cheaper one wins, polls included; a tie goes to batches, which never empties the list.
    Clearing is only offered when the diff is a replace with removals, and only when the whole
    job fits in what remains of today's budget (so the list is never left half-empty across a
    reset) — unless the export had no contact ids, when clearing is the only way to remove
    anyone. ``remaining_today`` and ``per_day`` are the budget of the lane the job runs in.
    """
    if per_day < 1:
        raise ValueError("per_day must be at least 1.")
    adds, removes = len(diff.adds), len(diff.removes)
    if sum(chunk_sizes_adds) != adds:
        raise ValueError(f"chunk_sizes_adds sum to {sum(chunk_sizes_adds):,}, not {adds:,} adds.")
    if sum(chunk_sizes_all) != desired_count:
        raise ValueError(
            f"chunk_sizes_all sum to {sum(chunk_sizes_all):,}, not {desired_count:,} contacts."
        )
    if removes and diff.mode != "replace":
        raise ValueError(f"a diff in mode {diff.mode!r} cannot remove members.")
    export_polls = _wave_polls(1)

    batches: _Cost | None = None
    if diff.removes_by_id or not removes:
        removal_calls = math.ceil(removes / REMOVE_BATCH_MAX)
        import_calls = len(chunk_sizes_adds)
        batches = _Cost(
            import_calls, removal_calls, export_polls + _wave_polls(import_calls + removal_calls)
        )
    clear: _Cost | None = None
    if removes:
        import_calls = len(chunk_sizes_all)
        clear = _Cost(import_calls, 1, export_polls + _wave_polls(1) + _wave_polls(import_calls))

    if clear is None:
        assert batches is not None  # only None when there are removals, and then clear is set
        chosen, strategy, reason = batches, STRATEGY_BATCHES, "nothing to remove"
    elif batches is None:
        chosen, strategy = clear, STRATEGY_CLEAR_AND_REIMPORT
        reason = "the export has no contact ids, so members can only be removed by clearing"
    elif clear.total > remaining_today:
        chosen, strategy = batches, STRATEGY_BATCHES
        reason = (
            f"clearing needs {clear.total:,} calls and {remaining_today:,} remain today: the "
            "list would sit half-empty across a daily reset"
        )
    elif clear.total < batches.total:
        chosen, strategy = clear, STRATEGY_CLEAR_AND_REIMPORT
        reason = f"{clear.total:,} calls instead of {batches.total:,} with removal batches"
    else:
        chosen, strategy = batches, STRATEGY_BATCHES
        reason = (
            f"{batches.total:,} calls instead of {clear.total:,} by clearing and re-importing"
            if batches.total < clear.total
            else "same cost as clearing and re-importing, and the list is never emptied"
        )

    total = chosen.total
    fits_today = total <= remaining_today
    days_needed = max(1, math.ceil(total / per_day))
    if fits_today:
        earliest_fit = None
    elif days_needed == 1:
        earliest_fit = RESET_HINT
    else:
        earliest_fit = f"spread over {days_needed} days"
    return SyncPlan(
        adds=adds,
        removes=removes,
        unchanged=diff.unchanged,
        strategy=strategy,
        reason=reason,
        import_calls=chosen.import_calls,
        removal_calls=chosen.removal_calls,
        export_calls=EXPORT_CALLS,
        expected_polls=chosen.expected_polls,
        total_calls=total,
        calls_after_export=total - EXPORT_CALLS - export_polls,
        single_call_equivalent=adds + removes,
        remaining_today=remaining_today,
        per_day=per_day,
        fits_today=fits_today,
        days_needed=days_needed,
        earliest_fit=earliest_fit,
        calls_by_strategy={
            STRATEGY_BATCHES: batches.total if batches else None,
            STRATEGY_CLEAR_AND_REIMPORT: clear.total if clear else None,
        },
    )


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
