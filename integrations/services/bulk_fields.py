"""What the cells of a contact CSV mean for Constant Contact: which header names which CC field,
which values CC's JSON import accepts, and which would run as a spreadsheet formula.

Pure functions over strings, shared by the desired-membership reader and the export parser.
Limits come from CC's ``JsonImportContact`` (see ``integrations.constant_contact.limits``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.core.validators import EmailValidator

from integrations.constant_contact.limits import (
    IMPORT_DATE_FIELD,
    IMPORT_EMAIL_MAX_LENGTH,
    IMPORT_INTEGER_FIELDS,
)

# --- Column names -----------------------------------------------------------------------------
# Header cells are compared after normalise_header: lower-cased, every run of characters other
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
    **{name: (name,) for name in (*IMPORT_INTEGER_FIELDS, IMPORT_DATE_FIELD)},
}

_HEADER_TO_KEY: dict[str, str] = {
    alias: key for key, aliases in COLUMN_ALIASES.items() for alias in aliases
} | dict.fromkeys(EMAIL_ALIASES, "email")

CONTACT_ID_ALIASES = frozenset({"contact_id", "contactid", "id"})


# OWASP "CSV injection": a cell starting with one of these is run as a formula by Excel,
# LibreOffice and Google Sheets when someone opens an export of it.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

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

# --- Formula neutralisation --------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"^[+-]?[\d\s().-]+$")


def neutralise_formula(value: str) -> str:
    """Return ``value`` prefixed with ``'`` when a spreadsheet would run it as a formula.

    Phone numbers and other plain numbers ("+1 555-0100", "-3") stay as they are: a
    spreadsheet evaluates them to themselves, and CC must receive them unaltered.
    """
    if value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def column_key(name: str) -> str | None:
    """The CC ``import_data`` key for a header cell ("email" for the email), or None."""
    if name[:3].lower() == "cf:":
        custom = name[3:].strip()
        return f"cf:{custom}" if custom else None
    return _HEADER_TO_KEY.get(normalise_header(name))


@dataclass(frozen=True)
class Column:
    """A header cell that maps to a CC field, and the longest value CC takes for it."""

    index: int
    name: str
    key: str
    max_length: int


def email_problem(email: str) -> str | None:
    """Why CC's import would refuse this (trimmed, lower-cased) email, or None."""
    if not email:
        return "email is empty"
    if email.startswith(FORMULA_PREFIXES):
        return f"email starts with {email[0]!r}, like a spreadsheet formula"
    if len(email) > IMPORT_EMAIL_MAX_LENGTH:
        return (
            f"email is {len(email)} characters long; Constant Contact's import accepts at most "
            f"{IMPORT_EMAIL_MAX_LENGTH}"
        )
    if not is_address(email):
        return "email is not a valid address"
    return None


def is_address(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and _EMAIL_LOCAL_PART.match(local) and _EMAIL_DOMAIN.match(domain))


def _typed_value(key: str, name: str, value: str) -> tuple[str, str | None]:
    """(normalised value, problem) for birthday_month/birthday_day/anniversary."""
    if key in IMPORT_INTEGER_FIELDS:
        top = IMPORT_INTEGER_FIELDS[key]
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


def row_fields(row: list[str], columns: list[Column]) -> tuple[dict[str, str], list[str]]:
    """The CC fields of one data row (trimmed, non-empty, neutralised, within CC's limits) and
    the problems that kept other cells out."""
    fields: dict[str, str] = {}
    problems: list[str] = []
    width = len(row)
    for column in columns:
        if column.index >= width:
            continue
        value = row[column.index].strip()
        if not value:
            continue
        if column.key in IMPORT_INTEGER_FIELDS or column.key == IMPORT_DATE_FIELD:
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
    if ("birthday_month" in fields) != ("birthday_day" in fields):
        problems.append("birthday month and birthday day must be given together")
    elif "birthday_month" in fields:
        month, day = int(fields["birthday_month"]), int(fields["birthday_day"])
        if day > _DAYS_IN_MONTH[month - 1]:
            problems.append(f"birthday {month}/{day} is not a real date")
    return fields, problems
