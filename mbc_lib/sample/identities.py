"""Synthetic patient identities for the sample tree: obviously made up, but distinctive.

Every identifying string is at least six characters long and drawn from made-up syllables, so a
search for its bytes in de-identified output cannot match by chance. Names are upper case and are
written verbatim (same case) into every container that carries them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

FUNDUS_DATASET = "fundus-glaucoma"
CT_DATASET = "ct-covid"
FUNDUS_PREFIX = "RET"
CT_PREFIX = "THX"

_ONSETS = ("QU", "BR", "ZH", "VR", "TH", "KL", "DR", "SK", "GW", "PH", "STR", "FL", "ORM", "YV")
_MIDDLES = ("ORV", "ANDE", "ELM", "IXA", "OBRE", "UNNI", "ASTO", "EVRA", "ILDO", "OWYN", "ARQU")
_CODAS = ("DEL", "MAR", "WICK", "STON", "VALE", "HOLT", "RIDGE", "MOOR", "BECK", "ZAND", "LOCK")
_GIVEN = (
    "ELOWYNA",
    "THADRIEL",
    "MIRABETH",
    "CORVINUS",
    "ISOLWEN",
    "BARNABUS",
    "FENWYRA",
    "OSWALDO",
    "PERIWEN",
    "LUCASTOR",
    "ZEPHRINA",
    "ALDOVAR",
    "MARISOLA",
    "TIBERION",
    "GWENDARA",
    "HALVARD",
    "RONELLIA",
    "SEVRANUS",
    "ODALINDA",
    "QUENTRIX",
)
_STREETS = (
    "Vendrask Lane",
    "Orrimel Street",
    "Quillbrook Road",
    "Thistlevar Avenue",
    "Brommeldyke Way",
    "Sarnavel Close",
    "Ketterwold Drive",
    "Yssandor Place",
)
_TOWNS = ("Quillmoor", "Varnholt", "Brisketon", "Oddenvale", "Marrowick", "Felstrand")
_EYE_CLINICS = ("Quillmoor Eye Institute", "Marrowick Retina Centre", "Felstrand Ophthalmic Clinic")
_HOSPITALS = (
    "Varnholt University Hospital",
    "Brisketon General Infirmary",
    "Oddenvale Regional Hospital",
)


@dataclass(frozen=True)
class SampleIdentity:
    """One synthetic patient with the identifying facts a hospital system would record."""

    patient_id: str
    family_name: str
    given_name: str
    birth_date: str  # YYYYMMDD
    sex: str  # "F" or "M"
    address: str
    phone: str
    institution: str
    referring_physician: str  # DICOM PN form FAMILY^GIVEN
    operator: str  # DICOM PN form FAMILY^GIVEN
    device_serial: str
    accession_number: str

    @property
    def dicom_name(self) -> str:
        """The patient name in DICOM PN form, FAMILY^GIVEN."""
        return f"{self.family_name}^{self.given_name}"

    @property
    def display_name(self) -> str:
        """The patient name as a camera or report would print it, GIVEN FAMILY."""
        return f"{self.given_name} {self.family_name}"


def family_name_of(person_name: str) -> str:
    """The family-name component of a PN string FAMILY^GIVEN."""
    return person_name.split("^", 1)[0]


def phi_strings(identity: SampleIdentity) -> list[str]:
    """Strings that must not appear in de-identified output bytes for this patient."""
    return [
        identity.patient_id,
        identity.family_name,
        identity.given_name,
        identity.birth_date,
        identity.address,
        identity.phone,
        identity.accession_number,
        identity.device_serial,
        identity.institution,
        family_name_of(identity.referring_physician),
        family_name_of(identity.operator),
    ]


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A Generator determined by the seed and a path of keys (strings hashed with CRC-32)."""
    if seed < 0:
        raise ValueError("seed must be >= 0")
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _family_name(rng: np.random.Generator) -> str:
    middles = 1 + int(rng.integers(2))
    return (
        _ONSETS[rng.integers(len(_ONSETS))]
        + "".join(_MIDDLES[rng.integers(len(_MIDDLES))] for _ in range(middles))
        + _CODAS[rng.integers(len(_CODAS))]
    )


def _person(rng: np.random.Generator) -> str:
    return f"{_family_name(rng)}^{_GIVEN[rng.integers(len(_GIVEN))]}"


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, n))


def _letters(rng: np.random.Generator, n: int) -> str:
    return "".join(chr(ord("A") + int(c)) for c in rng.integers(0, 26, n))


def _one_identity(rng: np.random.Generator, prefix: str, taken: set[str]) -> SampleIdentity:
    institutions = _EYE_CLINICS if prefix == FUNDUS_PREFIX else _HOSPITALS
    family = _family_name(rng)
    while family in taken:
        family = _family_name(rng)
    taken.add(family)
    birth = np.datetime64("1938-01-01") + int(rng.integers(0, 62 * 365))
    town = _TOWNS[rng.integers(len(_TOWNS))]
    return SampleIdentity(
        patient_id=f"{prefix}{_letters(rng, 2)}{_digits(rng, 6)}",
        family_name=family,
        given_name=_GIVEN[rng.integers(len(_GIVEN))],
        birth_date=str(birth).replace("-", ""),
        sex="F" if rng.random() < 0.5 else "M",
        address=f"{rng.integers(2, 98)} {_STREETS[rng.integers(len(_STREETS))]}, {town}",
        phone=f"+99-555-{_digits(rng, 7)}",
        institution=institutions[rng.integers(len(institutions))],
        referring_physician=_person(rng),
        operator=_person(rng),
        device_serial=f"SN{_letters(rng, 3)}{_digits(rng, 5)}",
        accession_number=f"ACC{_digits(rng, 8)}",
    )


def patient_identities(
    seed: int, n: int, prefix: str, avoid: frozenset[str] = frozenset()
) -> list[SampleIdentity]:
    """``n`` distinct synthetic patients; family names in ``avoid`` are not used."""
    rng = rng_for(seed, "identities", prefix)
    taken = set(avoid)
    people: list[SampleIdentity] = []
    ids: set[str] = set()
    while len(people) < n:
        person = _one_identity(rng, prefix, taken)
        if person.patient_id not in ids:
            ids.add(person.patient_id)
            people.append(person)
    return people


def fundus_patient_count(n_fundus: int) -> int:
    """Patients behind ``n_fundus`` photographs: two eyes each (the last one may have one)."""
    return (n_fundus + 1) // 2


def sample_identities(seed: int, n_fundus: int, n_ct: int) -> dict[str, list[SampleIdentity]]:
    """The identities ``write_sample_tree`` uses for these parameters, by dataset folder."""
    fundus = patient_identities(seed, fundus_patient_count(n_fundus), FUNDUS_PREFIX)
    used = frozenset(p.family_name for p in fundus)
    ct = patient_identities(seed, n_ct, CT_PREFIX, avoid=used)
    return {FUNDUS_DATASET: fundus, CT_DATASET: ct}


__all__ = [
    "CT_DATASET",
    "FUNDUS_DATASET",
    "SampleIdentity",
    "fundus_patient_count",
    "patient_identities",
    "phi_strings",
    "rng_for",
    "sample_identities",
]
