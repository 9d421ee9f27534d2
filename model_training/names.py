"""What the chart calls each label: ICD-10-CM display names and parents, and lab abnormalities by their short names.

Diagnosis names and the code hierarchy come from the CMS ICD-10-CM tables as the
``simple-icd-10-cm`` package ships them, never from the simulator, so a model trained
on a hospital's own codes gets the same names as one trained on the simulated
hospital. Codes are written as the cohort writes them, without the dot (``E039``);
parents are the category and subcategory codes above a code, nearest first
(``E039`` → ``E03``), leaving out the table's blocks (``E00-E07``) and chapters,
which are not codes a chart can carry. A code the table does not know keeps its
code as display, with a warning, so an export never stops on a local code.

Lab abnormalities read as clinicians write them: "Potassium high", "NT-proBNP high".
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from types import ModuleType

from model_training.data.catalogue import LABS_BY_KEY

log = logging.getLogger(__name__)

#: Short names of the catalogue's labs as they appear on a ward round or a results list.
LAB_SHORT_NAMES: dict[str, str] = {
    "sodium": "Sodium", "potassium": "Potassium", "chloride": "Chloride", "bicarbonate": "Bicarbonate",
    "urea_nitrogen": "BUN", "creatinine": "Creatinine", "glucose": "Glucose", "calcium": "Calcium",
    "magnesium": "Magnesium", "phosphate": "Phosphate", "albumin": "Albumin", "alt": "ALT", "ast": "AST",
    "alkaline_phosphatase": "Alkaline phosphatase", "bilirubin_total": "Bilirubin", "crp": "CRP",
    "troponin_t": "Troponin T", "ntprobnp": "NT-proBNP", "creatine_kinase": "CK", "tsh": "TSH", "wbc": "WBC",
    "hemoglobin": "Hemoglobin", "hematocrit": "Hematocrit", "platelets": "Platelets", "rdw": "RDW", "inr": "INR",
    "ptt": "PTT", "d_dimer": "D-dimer", "lactate": "Lactate", "ph": "pH", "pco2": "pCO2",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DiagnosisName:
    """A code's display and its parent codes (nearest first); ``known`` is False for a code the table lacks."""

    code: str
    display: str
    parents: tuple[str, ...]
    known: bool


@functools.cache
def _code_table() -> ModuleType:
    """The ICD-10-CM table, imported on first use: parsing it takes seconds, which only an export should pay."""
    with warnings.catch_warnings():
        # simple-icd-10-cm 1.5.0 reads its tables with importlib.resources.read_text/open_text (deprecated in 3.11).
        warnings.filterwarnings("ignore", message=r"(read|open)_text is deprecated", category=DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


def diagnosis_name(code: str) -> DiagnosisName:
    """Display and parents of an ICD-10-CM code, dotted or not; an unknown code is its own display (logged)."""
    icd10cm = _code_table()
    if not icd10cm.is_valid_item(code):
        log.warning("ICD-10-CM code %r is not in the code table: its display is the code itself", code)
        return DiagnosisName(code, code, (), known=False)
    parents = tuple(
        icd10cm.remove_dot(ancestor)
        for ancestor in icd10cm.get_ancestors(code)
        if icd10cm.is_category_or_subcategory(ancestor)
    )
    return DiagnosisName(code, icd10cm.get_description(code), parents, known=True)


def diagnosis_display(code: str) -> str:
    """The table's display of ``code``, or the code itself when the table does not know it (logged)."""
    return diagnosis_name(code).display


def lab_display(lab: str, direction: str) -> str:
    """``"Potassium high"``: the lab's short name (else the catalogue's label, else the key) and the direction."""
    definition = LABS_BY_KEY.get(lab)
    name = LAB_SHORT_NAMES.get(lab) or (definition.label if definition is not None else lab)
    return f"{name} {direction}"
