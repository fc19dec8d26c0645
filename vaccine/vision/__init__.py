"""Vision-language models (LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM): where the language model sits
inside one (:mod:`.structure`), so Vaccine perturbs its decoder layers and LoRA adapts its projections, never
the vision tower's.

The rest of the image path lives with the text path it parallels, and is chosen by what was loaded (a
processor in the tokenizer's place), so a text decoder runs exactly as before: models load through
transformers' image-text-to-text auto class with their processor (:mod:`vaccine.models`); the processor, the
prompt text with the image placeholder and image loading are :mod:`vaccine.data.image_prompts`; records with
images -> token ids and the collator that batches images, :mod:`vaccine.data.image_tokenize`; image+text data
(VLGuard's layout), :mod:`vaccine.data.vlguard`; batched greedy answers to image+text prompts,
:mod:`vaccine.eval.generate_images`.
"""
