"""``dicomnode show PATH...``: a readable dump of DICOM files, pixel data summarised.

A folder shows every DICOM file below it, in name order; files in it that are
not DICOM are skipped with a note on stderr (a file named on the command
line that is not DICOM is an error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.uid import UID

from dicomnode.dicom.lazy import read_dataset
from dicomnode.errors import DicomnodeError

__all__ = ["configure", "describe", "pixel_summary"]

_PIXEL_KEYWORDS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
_INDENT = "  "


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode show`` and return its handler."""
    parser.add_argument("files", nargs="+", metavar="PATH", help="DICOM files, or folders searched recursively")
    parser.add_argument("--no-meta", action="store_true", help="leave out the file meta information")
    parser.add_argument(
        "--force", action="store_true",
        help="also read a bare dataset without the DICOM file header ('DICM' preamble and file meta)",
    )
    parser.add_argument(
        "--width", type=int, default=80, metavar="N",
        help="cut values longer than N characters (default: 80; 0 shows everything)",
    )
    return _run


def pixel_summary(dataset: Dataset, element: DataElement) -> str:
    """Pixel data as a short text such as ``<512x512 uint16, 524288 bytes>``."""
    size = len(element.value) if isinstance(element.value, bytes | bytearray) else 0
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if not rows or not columns:
        return f"<{size} bytes>"
    if element.keyword == "FloatPixelData":
        kind = "float32"
    elif element.keyword == "DoubleFloatPixelData":
        kind = "float64"
    else:
        bits = dataset.get("BitsAllocated", 0)
        kind = "1-bit" if bits == 1 else f"{'int' if dataset.get('PixelRepresentation', 0) else 'uint'}{bits}"
    shape = f"{rows}x{columns}"
    samples = dataset.get("SamplesPerPixel", 1) or 1
    if samples > 1:
        shape += f"x{samples}"
    parts = [f"{shape} {kind}"]
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        parts.append(f"{frames} frames")
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and UID(syntax).is_compressed:
        parts.append(f"encapsulated {UID(syntax).name}")
    parts.append(f"{size} bytes")
    return f"<{', '.join(parts)}>"


def _value_text(dataset: Dataset, element: DataElement, width: int) -> str:
    value = element.value
    if element.keyword in _PIXEL_KEYWORDS:
        return pixel_summary(dataset, element)
    if value is None or value == "":
        text = "(empty)"
    elif isinstance(value, bytes | bytearray) or element.VR in _BINARY_VRS:
        text = f"<{len(value)} bytes>" if isinstance(value, bytes | bytearray) else repr(value)
    elif element.VR == "UI":
        uid = UID(str(value))
        text = f"{uid} ({uid.name})" if uid.is_valid and uid.name != str(uid) else str(uid)
    elif element.VM > 1:
        text = "\\".join(str(item) for item in value)
    else:
        text = str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    if width and len(text) > width:
        text = text[: max(1, width - 1)] + "…"
    return text


def describe(dataset: Dataset, *, width: int = 80, depth: int = 0) -> Iterator[str]:
    """The lines of a readable dump of ``dataset``; sequence items are indented."""
    indent = _INDENT * depth
    for tag in sorted(dataset.keys()):
        label = f"({tag.group:04X},{tag.element:04X})"
        try:
            element = dataset[tag]
        except Exception as error:  # a malformed value must not hide the rest of the file
            yield f"{indent}{label} <cannot decode: {error}>"
            continue
        name = element.keyword or element.name
        if element.VR == "SQ":
            items = element.value
            yield f"{indent}{label} {name:<36} SQ  {len(items)} item{'s' if len(items) != 1 else ''}"
            for number, item in enumerate(items, start=1):
                yield f"{indent}{_INDENT}item {number}"
                yield from describe(item, width=width, depth=depth + 2)
            continue
        try:
            text = _value_text(dataset, element, width)
        except Exception as error:
            text = f"<cannot decode: {error}>"
        yield f"{indent}{label} {name:<36} {element.VR:<3} {text}"


def _show(path: str, args: argparse.Namespace) -> None:
    dataset = read_dataset(path, force=args.force)
    meta = getattr(dataset, "file_meta", None)
    print(f"# {path}")
    if meta is not None and len(meta) and not args.no_meta:
        print("File meta information")
        for line in describe(meta, width=args.width, depth=1):
            print(line)
        print("Dataset")
    for line in describe(dataset, width=args.width, depth=1):
        print(line)


def _run(args: argparse.Namespace) -> int:
    if args.width < 0:
        raise DicomnodeError(f"--width must be 0 or more, got {args.width}")
    try:
        return _show_all(args)
    except BrokenPipeError:
        # the reader (``| head``) has what it wanted; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _expand(paths: list[str]) -> Iterator[tuple[str, bool]]:
    """Each file to show, and whether it was found in a folder (rather than named)."""
    for path in paths:
        if not os.path.isdir(path):
            yield path, False
            continue
        found = False
        for root, folders, names in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or name == "DICOMDIR":
                    continue
                found = True
                yield os.path.join(root, name), True
        if not found:
            raise DicomnodeError(f"{path} is a folder with no files in it")


def _show_all(args: argparse.Namespace) -> int:
    status = 0
    shown = skipped = 0
    files = list(_expand(args.files))
    for path, in_folder in files:
        try:
            if shown:
                print()
            _show(path, args)
            shown += 1
        except (DicomnodeError, OSError) as error:
            if in_folder and isinstance(error, DicomnodeError):
                skipped += 1  # a folder often holds other files (a README, a DICOMDIR, a viewer)
                print(f"dicomnode show: skipped {path}: not a readable DICOM file", file=sys.stderr)
                continue
            if len(files) == 1:
                raise
            # with several files, report this one and go on with the others
            print(f"dicomnode show: error: {error}", file=sys.stderr)
            status = 1
    if not shown and skipped:
        raise DicomnodeError(f"no DICOM file among the {skipped} file(s) found in {', '.join(args.files)}")
    return status
