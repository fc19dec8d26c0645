"""Data for alignment, attack and evaluation: records, loaders, built-in splits, templates, tokenization."""

from __future__ import annotations

from vaccine.data.records import Record, normalize_text
from vaccine.data.sources import load_file, load_hub, load_records
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
]
