"""Data for alignment, attack and evaluation: records, loaders, built-in splits, templates, tokenization.

Layers, each importing only those below it: ``records`` (the Record type, prompt hashing, seeded subsets),
``files`` (user files and hub data sets), ``sources`` (the packaged assets), ``splits`` (the built-in
splits), ``vlguard`` (image+text records: VLGuard's layout or flat rows, local or a hub copy), ``resolve``
(a data spec -> records).
"""

from __future__ import annotations

from vaccine.data.files import load_file, load_hub
from vaccine.data.records import Record, normalize_text, prompt_hash, seeded_subset
from vaccine.data.resolve import load_records
from vaccine.data.splits import SPLITS, alignment_split, assert_disjoint, evaluation_prompts, harmful_split
from vaccine.data.templates import TEMPLATES, format_prompt
from vaccine.data.tokenize import CompletionCollator, CompletionDataset, encode_record

__all__ = [
    "SPLITS",
    "TEMPLATES",
    "CompletionCollator",
    "CompletionDataset",
    "Record",
    "alignment_split",
    "assert_disjoint",
    "encode_record",
    "evaluation_prompts",
    "format_prompt",
    "harmful_split",
    "load_file",
    "load_hub",
    "load_records",
    "normalize_text",
    "prompt_hash",
    "seeded_subset",
]
