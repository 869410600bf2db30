"""Reading desired-membership CSVs and CC's exports exactly, and writing rejected rows."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from integrations.constant_contact.limits import CUSTOM_FIELDS_MAX, IMPORT_EMAIL_MAX_LENGTH
from integrations.services.bulk_csv import (
    CsvRejected,
    DesiredSet,
    RejectedRow,
    current_from_export_csv,
    desired_from_csv,
    rejected_rows_csv,
)
from integrations.services.bulk_fields import neutralise_formula


def write_csv(tmp_path: Path, text: str, *, name: str = "desired.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rejected_lines(desired: DesiredSet) -> dict[int, str]:
    return {row.line: row.reason for row in desired.rejected}


def rejection(path: Path, **kwargs) -> CsvRejected:
    with pytest.raises(CsvRejected) as caught:
        desired_from_csv(path, **kwargs)
    assert "\n" not in str(caught.value)
    assert "Traceback" not in str(caught.value)
    return caught.value


# --- desired_from_csv: the good path -------------------------------------------------------------


def test_maps_known_columns_to_cc_keys_and_reports_unknown_ones(tmp_path):
    path = write_csv(
        tmp_path,
        "Email Address,First Name,Last Name,Company,Job Title,Phone,Zip/Postal Code,Notes,\n"
        "  Ann@Example.COM ,Ann,Lee,Acme,CTO,555-0100,02139,likes tea,\n"
        "bob@example.com,Bob,,,,,,,\n",
    )

    desired = desired_from_csv(path)

    assert desired.contacts == {
        "ann@example.com": {
            "first_name": "Ann",
            "last_name": "Lee",
            "company_name": "Acme",
            "job_title": "CTO",
            "phone": "555-0100",
            "zip": "02139",
        },
        "bob@example.com": {"first_name": "Bob"},
    }
    assert desired.rows_read == 2
    assert desired.duplicates == 0
    assert desired.rejected == []
    assert desired.ignored_columns == ["Notes"]
    assert desired.columns[:3] == ["Email Address", "First Name", "Last Name"]
    assert desired.column_map["Zip/Postal Code"] == "zip"


@pytest.mark.parametrize(
    "header", ["email", "EMAIL", "Email_Address", "email address", "E-mail", "EmailAddress"]
)
def test_email_column_is_found_by_any_alias_in_any_case(tmp_path, header):
    path = write_csv(tmp_path, f"Name,{header}\nAnn,ann@example.com\n")

    assert list(desired_from_csv(path).contacts) == ["ann@example.com"]


def test_header_only_file_is_a_valid_empty_set(tmp_path):
    desired = desired_from_csv(write_csv(tmp_path, "email,first_name\r\n"))

    assert desired.contacts == {}
    assert desired.rows_read == 0
    assert desired.rejected == []


def test_utf8_bom_is_dropped_from_the_first_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfEmail,First Name\r\nzoe@example.com,Zo\xc3\xab\r\n")

    desired = desired_from_csv(path)

    assert desired.columns == ["Email", "First Name"]
    assert desired.contacts == {"zoe@example.com": {"first_name": "Zoë"}}


def test_utf16_with_bom_and_tabs_is_read(tmp_path):
    # Excel's "Unicode Text" export: UTF-16 with a BOM, tab-separated.
    path = write_csv(
        tmp_path, "\ufeffemail\tfirst_name\r\nzoe@example.com\tZoë\r\n", encoding="utf-16"
    )

    desired = desired_from_csv(path)

    assert desired.contacts == {"zoe@example.com": {"first_name": "Zoë"}}
    assert (desired.encoding, desired.delimiter) == ("utf-16", "\t")


def test_semicolon_separated_file_from_a_european_excel_is_read(tmp_path):
    path = write_csv(tmp_path, "E-Mail;Vorname;Company\nann@example.com;Ann;Acme, Inc.\n")

    desired = desired_from_csv(path)

    assert desired.contacts == {"ann@example.com": {"company_name": "Acme, Inc."}}
    assert desired.ignored_columns == ["Vorname"]


def test_blank_lines_and_rows_of_empty_cells_are_skipped(tmp_path):
    path = write_csv(tmp_path, "\n\nemail,first_name\n\n,\n  ,  \nann@example.com,Ann\n\n")

    desired = desired_from_csv(path)

    assert desired.contacts == {"ann@example.com": {"first_name": "Ann"}}
    assert desired.rows_read == 1
    assert desired.rejected == []


def test_custom_field_columns_are_kept_with_their_names(tmp_path):
    path = write_csv(tmp_path, "email,CF:Shoe Size, cf:tier \nann@example.com,42,gold\n")

    desired = desired_from_csv(path)

    assert desired.contacts == {"ann@example.com": {"cf:Shoe Size": "42", "cf:tier": "gold"}}


def test_duplicates_collapse_case_insensitively_and_later_rows_only_fill_gaps(tmp_path):
    path = write_csv(
        tmp_path,
        "email,first_name,last_name,company\n"
        "ann@example.com,Ann,,\n"
        "ANN@Example.com,Annie,Lee,\n"
        " ann@example.COM ,,,Acme\n"
        "bob@example.com,Bob,,\n",
    )

    desired = desired_from_csv(path)

    assert desired.contacts["ann@example.com"] == {
        "first_name": "Ann",
        "last_name": "Lee",
        "company_name": "Acme",
    }
    assert desired.rows_read == 4
    assert desired.duplicates == 2
    assert len(desired.contacts) == 2


def test_short_rows_are_read_and_long_rows_with_extra_data_rejected(tmp_path):
    path = write_csv(
        tmp_path,
        "email,first_name,last_name\n"
        "short@example.com,Sam\n"
        "trailing@example.com,Tia,Ray,,\n"
        "shifted@example.com,Acme, Inc.,Ray\n",
    )

    desired = desired_from_csv(path)

    assert desired.contacts == {
        "short@example.com": {"first_name": "Sam"},
        "trailing@example.com": {"first_name": "Tia", "last_name": "Ray"},
    }
    assert "4 values but the header has 3 columns" in rejected_lines(desired)[4]
    assert desired.rejected_valid_emails == {"shifted@example.com"}


# --- desired_from_csv: rejected rows ----------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_malformed_emails_are_reported_at_the_line_where_their_record_starts(tmp_path, newline):
    lines = [
        "email,first_name,company",  # 1
        'good@example.com,Ann,"Two',  # 2  a two-line company name is a value, not rows
        'line company"',  # 3
        "not-an-email,Bob,Acme",  # 4
        "",  # 5
        "also@bad,Di,Acme",  # 6
        "a b@example.com,Ed,Acme",  # 7
        ",Gus,Acme",  # 8
        "fine@example.com,Hal,Acme",  # 9
    ]
    path = write_csv(tmp_path, newline.join(lines) + newline)

    desired = desired_from_csv(path)

    reasons = rejected_lines(desired)
    assert sorted(reasons) == [4, 6, 7, 8]
    assert reasons[4] == "email is not a valid address"
    assert reasons[8] == "email is empty"
    assert sorted(desired.contacts) == ["fine@example.com", "good@example.com"]
    assert desired.contacts["good@example.com"]["company_name"] == f"Two{newline}line company"
    by_line = {row.line: row for row in desired.rejected}
    assert by_line[4].email == "not-an-email"
    assert desired.rejected_valid_emails == set()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # The reproduction: one stray quote takes q3-q5 into Bob's first name.
        (
            'email,first_name\nq1@example.com,Ann\nq2@example.com,"Bob\nq3@example.com,Cy\n'
            "q4@example.com,Di\nq5@example.com,Ed\n",
            3,
        ),
        # Closed much later: still swallows rows in between.
        ('email,company\na@example.com,"Acme\nb@example.com,Beta\nc@example.com,Gamma"\n', 2),
        # Text after a closing quote.
        ('email,company\na@example.com,"Acme"x\nb@example.com,Beta\n', 2),
        # An address split over two lines is not an address, and takes in the next row.
        ('email,company\n"broken\none@example.com",Acme\n', 2),
    ],
    ids=["stray-quote", "closed-late", "text-after-quote", "split-address"],
)
def test_a_quote_that_swallows_rows_refuses_the_file_at_the_line_it_opens(tmp_path, text, line):
    refused = rejection(write_csv(tmp_path, text))
    assert refused.line == line
    assert f"line {line}" in str(refused)


@pytest.mark.parametrize(
    "email",
    [
        "ann@localhost",
        "ann@[192.168.0.1]",
        '"ann lee"@example.com',
        "Ann Lee <ann@example.com>",
        "ann@@example.com",
        "ann@example",
        "zoë@example.com",
    ],
)
def test_addresses_cc_would_refuse_are_rejected(tmp_path, email):
    quoted = '"' + email.replace('"', '""') + '"'
    path = write_csv(tmp_path, f"email\n{quoted}\n")

    desired = desired_from_csv(path)

    assert desired.contacts == {}
    assert desired.rejected == [RejectedRow(2, email, "email is not a valid address")]


def test_email_longer_than_the_import_limit_is_rejected(tmp_path):
    fits = "a" * (IMPORT_EMAIL_MAX_LENGTH - len("@example.com")) + "@example.com"
    too_long = "b" + fits
    path = write_csv(tmp_path, f"email\n{fits}\n{too_long}\n")

    desired = desired_from_csv(path)

    assert list(desired.contacts) == [fits]
    assert desired.rejected_valid_emails == {too_long}  # may be a member created some other way
    assert rejected_lines(desired) == {
        3: f"email is {IMPORT_EMAIL_MAX_LENGTH + 1} characters long; "
        f"Constant Contact's import accepts at most {IMPORT_EMAIL_MAX_LENGTH}"
    }


def test_field_longer_than_cc_allows_rejects_the_row_but_protects_the_member(tmp_path):
    path = write_csv(
        tmp_path,
        "email,First Name,Street\n"
        f"ann@example.com,{'A' * 50},{'S' * 255}\n"
        f"bob@example.com,{'B' * 51},\n"
        f"cy@example.com,-{'C' * 49},{'S' * 256}\n",
    )

    desired = desired_from_csv(path)

    assert list(desired.contacts) == ["ann@example.com"]
    reasons = rejected_lines(desired)
    assert reasons[3] == '"First Name" is 51 characters long; Constant Contact accepts at most 50'
    assert "counting the ' added before a formula sign" in reasons[4]
    assert '"Street" is 256 characters long' in reasons[4]
    assert desired.rejected_valid_emails == {"bob@example.com", "cy@example.com"}


def test_birthday_and_anniversary_must_be_dates_cc_accepts(tmp_path):
    path = write_csv(
        tmp_path,
        "email,birthday_month,birthday_day,anniversary\n"
        "ok@example.com,03,7,2006-11-15\n"
        "us@example.com,12,31,11/15/2006\n"
        "half@example.com,3,,\n"
        "feb@example.com,2,30,\n"
        "month@example.com,13,1,\n"
        "date@example.com,,,15.11.2006\n"
        "real@example.com,,,2006-02-30\n",
    )

    desired = desired_from_csv(path)

    assert desired.contacts == {
        "ok@example.com": {"birthday_month": "3", "birthday_day": "7", "anniversary": "2006-11-15"},
        "us@example.com": {
            "birthday_month": "12",
            "birthday_day": "31",
            "anniversary": "11/15/2006",
        },
    }
    reasons = rejected_lines(desired)
    assert "must be given together" in reasons[4]
    assert "2/30 is not a real date" in reasons[5]
    assert "whole number from 1 to 12" in reasons[6]
    assert "not a date Constant Contact accepts" in reasons[7]
    assert "not a real date" in reasons[8]


def test_formula_cells_are_neutralised_before_they_reach_cc(tmp_path):
    path = write_csv(
        tmp_path,
        "email,first_name,last_name,company,job_title,city,phone\n"
        'ann@example.com,"=HYPERLINK(""http://evil.example"",""x"")",+cmd|calc,-2+A1,@SUM(A1:A9),  =cmd,+1 (555) 010-0100\n',
    )

    fields = desired_from_csv(path).contacts["ann@example.com"]

    assert fields == {
        "first_name": '\'=HYPERLINK("http://evil.example","x")',
        "last_name": "'+cmd|calc",
        "company_name": "'-2+A1",
        "job_title": "'@SUM(A1:A9)",
        "city": "'=cmd",
        # A plain phone number runs nothing in a spreadsheet and must reach CC unaltered.
        "phone": "+1 (555) 010-0100",
    }


@pytest.mark.parametrize(
    "email", ["=cmd@example.com", "+1@example.com", "-x@example.com", "@a.com"]
)
def test_email_that_looks_like_a_formula_is_a_rejected_row(tmp_path, email):
    desired = desired_from_csv(write_csv(tmp_path, f"email\n{email}\nok@example.com\n"))

    assert list(desired.contacts) == ["ok@example.com"]
    assert desired.rejected[0].line == 2
    assert "spreadsheet formula" in desired.rejected[0].reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "+1"),
        ("-2", "-2"),
        ("+1 (555) 010-0100", "+1 (555) 010-0100"),
        ("-2+A1", "'-2+A1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise_formula(value, expected):
    assert neutralise_formula(value) == expected


# --- desired_from_csv: rejected files ---------------------------------------------------------


def test_file_without_an_email_column_is_rejected_listing_its_columns(tmp_path):
    error = rejection(write_csv(tmp_path, "Name,Mail,Phone\nAnn,ann@example.com,555\n"))

    assert str(error).startswith('no email column; the columns found are "Name", "Mail", "Phone".')


def test_latin1_file_is_rejected_naming_the_first_bad_line(tmp_path):
    path = write_csv(
        tmp_path,
        "email,first_name\nann@example.com,Ann\nzoe@example.com,Zoë\nmo@example.com,Noël\n",
        encoding="cp1252",
    )

    error = rejection(path)

    assert error.line == 3
    assert str(error).startswith("line 3 is not UTF-8 text")
    assert "CSV UTF-8" in str(error)


def test_non_utf8_line_after_the_first_buffer_is_still_pinpointed(tmp_path):
    rows = "".join(f"user{i}@example.com,Ann\n" for i in range(5_000))  # ~100 KB of good lines
    path = tmp_path / "late.csv"
    path.write_bytes(b"email,first_name\n" + rows.encode() + b"late@example.com,Zo\xeb\n")

    assert rejection(path).line == 5_002


def test_ten_megabytes_of_random_bytes_are_not_a_text_csv(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(os.urandom(10 * 1024 * 1024))

    error = rejection(path)

    assert "not a text CSV file" in str(error)


def test_high_bit_garbage_without_nuls_is_refused_as_not_utf8(tmp_path):
    path = tmp_path / "garbage.csv"
    noise = bytes(b for b in os.urandom(300_000) if b >= 0x80)
    path.write_bytes(b"email\n" + noise)

    error = rejection(path)

    assert error.line == 2
    assert "not UTF-8" in str(error)


def test_nul_byte_past_the_sniffed_sample_is_refused_with_its_line(tmp_path):
    rows = "".join(f"user{i}@example.com\n" for i in range(10_000))
    path = tmp_path / "nul.csv"
    path.write_bytes(b"email\n" + rows.encode() + b"evil\x00@example.com\n")

    error = rejection(path)

    assert error.line == 10_002
    assert "NUL" in str(error)


def test_invalid_utf16_is_refused_naming_the_bad_line(tmp_path):
    path = tmp_path / "unicode.txt"
    good = "\ufeffemail\r\nann@example.com\r\n".encode("utf-16-le")
    path.write_bytes(good + b"\x00\xd8" + "x\r\n".encode("utf-16-le"))  # a lone surrogate

    error = rejection(path)

    assert "not valid UTF-16" in str(error)
    assert error.line == 3


def test_a_directory_is_refused_readably(tmp_path):
    assert str(rejection(tmp_path)).startswith("cannot read the file")


def test_excel_workbook_is_refused_with_a_save_as_hint(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"PK\x03\x04" + b"\x14\x00\x06\x00" + b"[Content_Types].xml" * 10)

    error = rejection(path)

    assert "Excel workbook" in str(error)
    assert "CSV UTF-8" in str(error)


def test_empty_file_is_refused(tmp_path):
    assert "empty" in str(rejection(write_csv(tmp_path, "")))
    assert "empty" in str(rejection(write_csv(tmp_path, "\n\r\n  \n", name="blank.csv")))


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"\x00" * 2048)  # would be refused as binary if it were read

    error = rejection(path, max_bytes=1024)

    assert str(error) == "the file is 2 KB (2,048 bytes); the limit is 1 KB (1,024 bytes)."


def test_row_limit_counts_data_rows_only(tmp_path):
    text = "email\n\n" + "".join(f"u{i}@example.com\n\n" for i in range(10))
    path = write_csv(tmp_path, text)

    assert len(desired_from_csv(path, max_rows=10).contacts) == 10
    error = rejection(path, max_rows=9)
    assert str(error) == "the file has more than 9 data rows; the limit is 9."
    assert error.line == 21


def test_more_than_25_custom_field_columns_are_refused(tmp_path):
    header = ",".join(["email", *(f"cf:field{i}" for i in range(CUSTOM_FIELDS_MAX + 1))])

    error = rejection(write_csv(tmp_path, header + "\n"))

    assert "26 custom-field (cf:) columns" in str(error)


def test_two_columns_for_the_same_cc_field_are_refused(tmp_path):
    error = rejection(write_csv(tmp_path, "Email,E-mail,Company\n"))

    assert str(error) == 'columns "Email" and "E-mail" both hold email; keep only one of them.'


def test_quote_left_open_is_refused_at_the_line_where_the_record_starts(tmp_path):
    tail = "".join(f"u{i}@example.com,x\n" for i in range(8_000))  # > csv's 128 K field limit
    path = write_csv(tmp_path, 'email,company\nann@example.com,"Acme\n' + tail)

    error = rejection(path)

    assert error.line == 2
    assert "double quote" in str(error)


def test_csv_rejected_message_is_always_one_line():
    error = CsvRejected("first\nsecond\r\n  third", line=7)

    assert str(error) == "first second third"
    assert error.line == 7


def test_memory_stays_bounded_while_reading_100k_rows(tmp_path, capsys):
    path = tmp_path / "large.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,last_name,company\r\n")
        for i in range(100_000):
            out.write(f"person{i:06d}@example.com,First{i},Last{i},Company {i % 977}\r\n")
    file_size = path.stat().st_size

    tracemalloc.start()
    try:
        desired = desired_from_csv(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(desired.contacts) == 100_000
    assert peak < 80 * 1024 * 1024
    assert file_size > 5 * 1024 * 1024  # the bound is meaningful relative to the file
    assert capsys.readouterr() == ("", "")


def test_the_file_is_streamed_not_read_whole(tmp_path):
    # 30,000 CRLF rows of one person: ~6 MB on disk, one contact in memory.
    path = tmp_path / "repeats.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,notes\r\n")
        for i in range(30_000):
            out.write(f"same@example.com,Sam,{i:>190}\r\n")
        out.write("not-an-email,Sam,last\r\n")

    tracemalloc.start()
    try:
        desired = desired_from_csv(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert path.stat().st_size > 6_000_000
    assert peak < 1024 * 1024
    assert desired.duplicates == 29_999
    assert desired.rejected == [RejectedRow(30_002, "not-an-email", "email is not a valid address")]


# --- current_from_export_csv --------------------------------------------------------------------


@pytest.mark.parametrize("id_header", ["Contact Id", "Contact ID", "contact_id", "id"])
def test_export_maps_emails_to_contact_ids(id_header):
    export = io.StringIO(
        f"\ufeffEmail Address,First Name,{id_header},Email Lists\r\n"
        "Ann@Example.com,Ann,id-ann,Main\r\n"
        ',"Two\r\nline",id-sms-only,\r\n'
        "bob@example.com,Bob,id-bob,Main\r\n",
        newline="",
    )

    assert current_from_export_csv(export) == {
        "ann@example.com": "id-ann",
        "bob@example.com": "id-bob",
    }


def test_export_lines_without_terminators_are_read_like_a_file():
    # requests' iter_lines() strips line endings, also inside quoted multi-line values.
    lines = ["Email Address,Notes,Contact Id", 'ann@example.com,"multi', 'line",id-ann']

    assert current_from_export_csv(lines) == {"ann@example.com": "id-ann"}


def test_export_without_an_id_column_gives_empty_ids():
    lines = ["Email Address,First Name", "ann@example.com,Ann", "bob@example.com,"]

    assert current_from_export_csv(lines) == {"ann@example.com": "", "bob@example.com": ""}


def test_export_without_an_email_column_is_refused():
    with pytest.raises(CsvRejected, match='no email column; its columns are "First Name", "id"'):
        current_from_export_csv(["First Name,id", "Ann,1"])


def test_export_with_a_quote_left_open_is_refused():
    lines = ["Email Address,Notes", 'ann@example.com,"open', *(["x" * 1000] * 200)]

    with pytest.raises(CsvRejected, match="export is malformed"):
        current_from_export_csv(lines)


def test_empty_export_is_an_empty_list():
    assert current_from_export_csv([]) == {}
    assert current_from_export_csv(["Email Address,Contact Id"]) == {}


# --- rejected_rows_csv --------------------------------------------------------------------------


def test_rejected_rows_csv_is_neutralised_and_round_trips():
    rows = [
        RejectedRow(2, "=HYPERLINK(1)@x", "email starts with '='"),
        RejectedRow(5, "ann@example.com", '"First Name" is 51 characters, long'),
    ]

    text = rejected_rows_csv(rows)

    assert list(csv.reader(io.StringIO(text))) == [
        ["line", "email", "reason"],
        ["2", "'=HYPERLINK(1)@x", "email starts with '='"],
        ["5", "ann@example.com", '"First Name" is 51 characters, long'],
    ]
