"""Image+text records: VLGuard's released layout, or flat rows that name an image; local files or the hub.

VLGuard (Zong et al., ICML 2024) ships ``train.json`` / ``test.json`` and the images in ``train.zip`` /
``test.zip``. Each item is one image with one or two instruction/answer pairs under ``instr-resp``:

- an unsafe image (``"safe": false``): ``{"instruction", "response"}``, the response a refusal;
- a safe image: ``{"safe_instruction", "response"}`` (a helpful answer) and ``{"unsafe_instruction",
  "response"}`` (a refusal of a harmful request about a harmless image).

VLGuard's evaluation (``VLGuard_eval.py``) calls these three kinds of pair ``unsafes``, ``safe_unsafes`` and
``safe_safes``; each record keeps its kind in ``meta["subset"]``, so a spec can take one of them: the unsafe
test pairs for the Harmful Score, the safe-safe pairs for the refusal rate on harmless requests. Flat rows
(``{"image", "prompt", "response", "safe"}``, any of the field names :mod:`vaccine.data.files` accepts) carry
other image+text data, e.g. the harmful pairs of an attack; their ``safe: false`` marks a harmful pair.

Spec: ``vlguard:PATH[?images=DIR][&subset=NAME][&label=VALUE]`` for local files (images default to the
folder named after the file beside it, ``test.json`` -> ``test/``, else the file's own folder), or
``vlguard:hf:OWNER/NAME[@SPLIT]`` for a hub copy (``SPLIT.json`` and ``SPLIT.zip``, unpacked once under
``$VACCINE_HOME/data/vlguard``). Every image is checked to exist when the records load, and an error names
the record and the image, so a wrong images folder fails before any model is loaded.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from vaccine.data.files import file_rows, label_value, row_to_record
from vaccine.data.records import Record
from vaccine.errors import DataError
from vaccine.paths import vaccine_home

PREFIX = "vlguard:"
SUBSETS = ("unsafes", "safe_unsafes", "safe_safes")
# instruction key of a VLGuard pair -> (its subset, the label of its answer in this package's terms)
PAIR_KINDS = {
    "instruction": ("unsafes", "safe"),
    "unsafe_instruction": ("safe_unsafes", "safe"),
    "safe_instruction": ("safe_safes", "benign"),
}
PAIRS_FIELD = "instr-resp"
QUERY_KEYS = ("images", "subset", "label")
_EXTRACTED = ".vaccine-complete"  # written last into an unpacked archive: its presence means it is whole


def is_vlguard_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_vlguard_spec(spec: str) -> tuple[str, dict[str, str]]:
    """(the file or ``hf:`` id, the options) of a ``vlguard:`` spec; bad options fail here, before any file
    is read (a grid can check its specs up front)."""
    if not is_vlguard_spec(spec):
        raise DataError(f"{spec}: not a {PREFIX} spec")
    target, _, query = spec[len(PREFIX) :].partition("?")
    if not target:
        raise DataError(f"{spec}: no file or hf: id after '{PREFIX}'")
    return target, _parse_query(spec, query)


def load_vlguard(spec: str) -> list[Record]:
    """The records of a ``vlguard:`` spec (see the module docstring), filtered by ``subset`` and ``label``."""
    target, options = parse_vlguard_spec(spec)
    if target.startswith("hf:"):
        meta, roots = _hub_files(target)
    else:
        meta = Path(target).expanduser()
        if not meta.is_file():
            raise DataError(f"{spec}: file {meta} not found")
        roots = [meta.parent / meta.stem, meta.parent]
    if "images" in options:
        roots = [Path(options["images"]).expanduser()]
        if not roots[0].is_dir():
            raise DataError(f"{spec}: images folder {roots[0]} not found")
    records = read_image_records(meta, roots)
    return _filtered(records, options, spec)


def _parse_query(spec: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in QUERY_KEYS or not value:
            raise DataError(
                f"{spec}: bad option {part!r}; the options are {', '.join(k + '=' for k in QUERY_KEYS)}"
            )
        options[key] = value
    if options.get("subset", SUBSETS[0]) not in SUBSETS:
        raise DataError(f"{spec}: subset must be one of {', '.join(SUBSETS)}; got {options['subset']!r}")
    return options


def _filtered(records: list[Record], options: dict[str, str], spec: str) -> list[Record]:
    for key, keep in (
        ("subset", lambda r, v: r.meta.get("subset") == v),
        ("label", lambda r, v: r.label == v),
    ):
        if key in options:
            records = [r for r in records if keep(r, options[key])]
            if not records:
                raise DataError(f"{spec}: no record has {key} {options[key]!r}")
    return records


def read_image_records(path: Path, roots: list[Path]) -> list[Record]:
    """Records of a VLGuard JSON or a flat .json/.jsonl/.csv file, images looked up under the first of
    ``roots`` that holds the first record's image (all of them are then checked there)."""
    rows = file_rows(path)
    source = f"vlguard:{path.name}"
    records = [record for where, row in rows for record in _row_records(row, _where(where, row), source)]
    if not records:
        raise DataError(f"{path}: no instruction/answer pairs in file")
    root = next((r for r in roots if (r / _image_field(records[0])).is_file()), roots[0])
    return [_with_image(record, root) for record in records]


def _where(where: str, row: dict) -> str:
    return f"{where} (id {row['id']})" if "id" in row else where


def _row_records(row: dict, where: str, source: str) -> Iterable[Record]:
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DataError(f"{where}: no 'image' field (the image file, relative to the images folder)")
    meta = {"where": where, "image_file": image}
    meta.update({key: row[key] for key in ("id", "harmful_category", "harmful_subcategory") if key in row})
    if PAIRS_FIELD not in row:  # a flat row: prompt, response, label as in any data file
        record = row_to_record(row, where, source)
        label = record.label if record.label is not None else label_value(row.get("safe"), "is_safe")
        yield Record(record.prompt, record.response, source, label, meta)
        return
    pairs = row[PAIRS_FIELD]
    if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) for p in pairs):
        raise DataError(f"{where}: '{PAIRS_FIELD}' must be a non-empty list of instruction/response objects")
    for index, pair in enumerate(pairs):
        key = next((k for k in PAIR_KINDS if k in pair), None)
        if key is None or not str(pair[key]).strip():
            raise DataError(
                f"{where}: {PAIRS_FIELD}[{index}] has no instruction ({' / '.join(PAIR_KINDS)}); "
                f"fields present: {sorted(pair)}"
            )
        subset, label = PAIR_KINDS[key]
        response = "" if pair.get("response") is None else str(pair["response"])
        yield Record(str(pair[key]), response, source, label, {**meta, "subset": subset})


def _image_field(record: Record) -> str:
    return record.meta["image_file"]


def _with_image(record: Record, root: Path) -> Record:
    relative = _image_field(record)
    image = (root / relative).expanduser()
    if not image.is_file():
        raise DataError(f"{record.meta['where']}: image {relative!r} not found in {root}")
    return Record(
        record.prompt, record.response, record.source, record.label, record.meta, str(image.resolve())
    )


# ---------------------------------------------------------------- hub copies
def _hub_files(target: str) -> tuple[Path, list[Path]]:
    """``SPLIT.json`` and the unpacked ``SPLIT.zip`` of a hub data set (VLGuard's hub layout)."""
    import huggingface_hub  # a dependency of transformers

    repo, _, split = target.removeprefix("hf:").partition("@")
    split = split or "train"
    try:
        meta = Path(huggingface_hub.hf_hub_download(repo, f"{split}.json", repo_type="dataset"))
        archive = Path(huggingface_hub.hf_hub_download(repo, f"{split}.zip", repo_type="dataset"))
    except Exception as err:  # noqa: BLE001 - every failure becomes one actionable message
        raise DataError(
            f"{PREFIX}{target}: could not download {split}.json / {split}.zip from the hub data set "
            f"{repo!r}: {type(err).__name__}: {str(err)[:300]}. Offline (or a gated data set without a "
            f"token)? Download them by hand and pass vlguard:/path/{split}.json?images=/path/{split}"
        ) from None
    folder = unpack(archive, vaccine_home() / "data" / "vlguard" / repo.replace("/", "--") / split)
    return meta, [folder / split, folder]


def unpack(archive: Path, target: Path) -> Path:
    """Unpack ``archive`` into ``target`` once: into a temporary sibling first, renamed into place when
    complete, so an interrupted unpack is never mistaken for a whole one. Members that would land outside
    the folder (absolute paths, ``..``) are refused."""
    if (target / _EXTRACTED).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                member = PurePosixPath(name)
                if member.is_absolute() or ".." in member.parts:
                    raise DataError(f"{archive}: refusing the archive member {name!r} (outside the folder)")
            zipped.extractall(staging)
        (staging / _EXTRACTED).write_text("")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: not a zip archive ({err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
