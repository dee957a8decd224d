"""Every kind of object the factory makes is valid DICOM by dciodvfy: not one error line.

The objects: derived CT and MR series (default blueprint plus the modality's
blueprint, with every kind of virtual element), the same with the copy policy
for unmentioned parent tags, a single derived instance, and Encapsulated PDF
reports of a CT and an MR parent. Warnings are allowed, and printed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_peer
from parent_series import RawFactory, ct_series, mr_series, slices, write
from pydicom import Dataset, dcmread

from dicomnode import (
    AttrElement,
    Blueprint,
    CopyElement,
    DiscardElement,
    FunctionalElement,
    InstanceCopyElement,
    SequenceElement,
    SeriesElement,
    StaticElement,
)
from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT, MR_IMAGE_BLUEPRINT
from dicomnode.dicom.pdf import encode_pdf

PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


class DepartmentFactory(RawFactory):
    department = "Clinical Physiology"


#: one element of every kind, on top of the defaults
EVERY_KIND = Blueprint([
    StaticElement("SeriesDescription", "LO", "Every element kind"),
    CopyElement("AccessionNumber"),
    AttrElement("InstitutionalDepartmentName", "LO", "department"),
    DiscardElement("PatientAge"),
    SeriesElement("DerivationDescription", "ST", lambda: "threshold at 100 HU"),
    SequenceElement("DerivationCodeSequence", [Blueprint([
        StaticElement("CodeValue", "SH", "113076"),
        StaticElement("CodingSchemeDesignator", "SH", "DCM"),
        StaticElement("CodeMeaning", "LO", "Segmentation"),
    ])]),
    FunctionalElement("ImageComments", "LT", lambda env: f"slice {env.instance_number} of {env.total_images}"),
    InstanceCopyElement("AcquisitionNumber", "IS"),
])


def derived_series(parents: list[Dataset], modality_blueprint: Blueprint,
                   policy: str = "discard") -> list[Dataset]:
    factory = DepartmentFactory(pipeline_name="validation", unmentioned_parent_tags=policy)
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT + modality_blueprint + EVERY_KIND)
    return factory.build_series(slices(len(parents)), header, parents)


def single_instance(parents: list[Dataset], modality_blueprint: Blueprint) -> list[Dataset]:
    ds = DepartmentFactory().build_instance(parents[0], DEFAULT_BLUEPRINT + modality_blueprint + EVERY_KIND)
    # build_instance makes no image; add the smallest one, as a pixel-type factory would
    ds.Rows, ds.Columns, ds.PixelData = 2, 2, bytes(8)
    if ds.Modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    return [ds]


def pdf_report(parents: list[Dataset], _modality_blueprint: Blueprint) -> list[Dataset]:
    return [encode_pdf(PDF, parents[0], Blueprint([StaticElement("DocumentTitle", "ST", "Volume report")]),
                       factory=DepartmentFactory(pipeline_name="validation"))]


PARENTS = {"ct": (ct_series, CT_IMAGE_BLUEPRINT), "mr": (mr_series, MR_IMAGE_BLUEPRINT)}
OBJECTS: dict[str, Callable[[list[Dataset], Blueprint], list[Dataset]]] = {
    "derived-series": derived_series,
    "derived-series-copy-policy": lambda parents, blueprint: derived_series(parents, blueprint, "copy"),
    "single-instance": single_instance,
    "encapsulated-pdf": pdf_report,
}


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    program = require_peer("dciodvfy")
    result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if "Error" in line]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


@pytest.mark.parametrize("source", ["memory", "files"])
@pytest.mark.parametrize("modality", sorted(PARENTS))
@pytest.mark.parametrize("kind", sorted(OBJECTS))
def test_the_object_has_no_dciodvfy_error(modality: str, kind: str, source: str, tmp_path: Path) -> None:
    make_parents, modality_blueprint = PARENTS[modality]
    parents = make_parents(3)
    for parent in parents:  # the parents themselves are valid, so every error is ours
        parent.AccessionNumber = "ACC-77"
    if source == "files":  # as a node receives them: still encoded until used
        parents = [dcmread(write(parent, tmp_path / f"parent-{n}.dcm")) for n, parent in enumerate(parents)]
    datasets = OBJECTS[kind](parents, modality_blueprint)
    assert datasets
    for number, ds in enumerate(datasets, start=1):
        path = write(ds, tmp_path / f"{kind}-{number}.dcm")
        errors, warnings = dciodvfy(path)
        for warning in warnings:
            print(f"{modality} {kind} #{number}: {warning}")
        assert errors == [], f"dciodvfy found errors in the {modality} {kind} #{number}:\n" + "\n".join(errors)


@pytest.mark.parametrize("make_parents", [ct_series, mr_series])
def test_the_parents_are_valid_themselves(make_parents: Callable[[int], list[Dataset]], tmp_path: Path) -> None:
    errors, _ = dciodvfy(write(make_parents(1)[0], tmp_path / "parent.dcm"))
    assert errors == []


def test_the_check_sees_errors(tmp_path: Path) -> None:
    broken = ct_series(1)[0]
    del broken.StudyInstanceUID
    errors, _ = dciodvfy(write(broken, tmp_path / "broken.dcm"))
    assert any("StudyInstanceUID" in error or "Study Instance UID" in error for error in errors), errors
