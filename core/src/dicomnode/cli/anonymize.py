"""``dicomnode anonymize IN OUT``: anonymize a file or a folder, recording the mapping.

The mapping (old -> new identifiers and UIDs) is written as JSON to
``--mapping FILE`` (default: ``<OUT>.mapping.json`` beside OUT, never inside
it). Given again, an existing mapping file is continued, so a study sent in
several batches keeps one set of new identifiers; ``--reverse`` uses it to put
the original identifiers back.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from dicomnode.dicom.anonymization import anonymize, checked_keep
from dicomnode.dicom.lazy import read_dataset, write_dataset
from dicomnode.dicom.tree import IdentityMapping, instance_path
from dicomnode.errors import ConfigurationError, DicomnodeError

__all__ = ["configure"]

_LOG_EVERY = 500


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode anonymize`` and return its handler."""
    parser.add_argument("source", metavar="IN", help="a DICOM file, or a folder searched recursively")
    parser.add_argument(
        "target", metavar="OUT",
        help="the file to write (when IN is a file) or the folder to fill with "
             "patient/study/series/instance.dcm",
    )
    parser.add_argument(
        "--mapping", metavar="FILE",
        help="JSON mapping to continue and update (default: OUT.mapping.json beside OUT); "
             "keep it safe, it re-identifies the data",
    )
    parser.add_argument(
        "--keep", action="append", default=[], metavar="KEYWORD",
        help="keep this attribute instead of removing or emptying it (repeatable), e.g. PatientWeight",
    )
    parser.add_argument("--keep-private", action="store_true", help="keep private elements")
    parser.add_argument("--seed", help="derive new UIDs and identifiers from this text (repeatable runs)")
    parser.add_argument(
        "--reverse", action="store_true",
        help="put the original identifiers back, using --mapping (removed attributes stay removed)",
    )
    return _run


def _inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    raise ConfigurationError(f"IN must be a DICOM file or a folder; {source} does not exist")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _load_mapping(path: Path, args: argparse.Namespace) -> IdentityMapping:
    if path.exists():
        mapping = IdentityMapping.from_json(path.read_text(encoding="utf-8"))
        if args.seed is not None and mapping.seed != args.seed:
            raise ConfigurationError(
                f"--seed {args.seed!r} differs from the seed recorded in {path} ({mapping.seed!r}); "
                f"leave --seed out to continue that mapping"
            )
        return mapping.reverse() if args.reverse else mapping
    if args.reverse:
        raise ConfigurationError(f"--reverse needs the mapping written by the anonymization; {path} does not exist")
    return IdentityMapping(seed=args.seed)


def _save_mapping(mapping: IdentityMapping, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    # the mapping re-identifies patients: readable by its owner only
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(mapping.to_json() + "\n")
    os.replace(temporary, path)


def _progress(done: int, total: int, final: bool = False) -> None:
    if sys.stderr.isatty():
        print(f"\ranonymize: {done}/{total} file(s)", end="\n" if final else "", file=sys.stderr, flush=True)
    elif done % _LOG_EVERY == 0 and not final:
        # a log file gets a line now and then rather than a rewritten one
        print(f"anonymize: {done}/{total} file(s)", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    source, target = Path(args.source), Path(args.target)
    checked_keep(args.keep)
    files = _inputs(source)
    if not files:
        raise ConfigurationError(f"IN ({source}) holds no files")
    single = source.is_file()
    if single and target.exists() and target.resolve() == source.resolve():
        raise ConfigurationError(f"OUT must not be IN ({source}): anonymize never overwrites its input")
    if not single and _inside(target, source):
        raise ConfigurationError(f"OUT ({target}) must not be inside IN ({source})")
    mapping_path = Path(args.mapping) if args.mapping else target.parent / f"{target.name}.mapping.json"
    folder_out = not single or target.is_dir()
    if folder_out and _inside(mapping_path, target):
        raise ConfigurationError(
            f"the mapping ({mapping_path}) must not be inside OUT ({target}): it would re-identify the data"
        )
    mapping = _load_mapping(mapping_path, args)
    written: dict[Path, Path] = {}
    skipped = 0
    try:
        for done, path in enumerate(files, start=1):
            try:
                dataset = read_dataset(path)
                if args.reverse:
                    mapping.apply(dataset)
                else:
                    anonymize(dataset, mapping, keep=args.keep, keep_private=args.keep_private)
                out = instance_path(target, dataset) if folder_out else target
                if out in written:
                    raise DicomnodeError(f"{path} has the same SOPInstanceUID as {written[out]}")
                write_dataset(dataset, out)
                written[out] = path
            except ConfigurationError:
                raise
            except (DicomnodeError, OSError) as error:
                if single:
                    raise
                skipped += 1
                newline = "\n" if sys.stderr.isatty() else ""
                print(f"{newline}anonymize: skipped: {error}", file=sys.stderr)
            _progress(done, len(files), final=done == len(files))
    finally:
        # also after an interruption: the files already written need their mapping
        if not args.reverse and (written or mapping_path.exists()):
            _save_mapping(mapping, mapping_path)
    verb = "restored" if args.reverse else "anonymized"
    summary = f"{verb} {len(written)} file(s) into {target}"
    if not args.reverse:
        summary += f"; mapping in {mapping_path}"
    if skipped:
        summary += f"; {skipped} file(s) skipped"
    print(summary, file=sys.stderr)
    return 1 if skipped or not written else 0
