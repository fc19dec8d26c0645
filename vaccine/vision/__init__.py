"""Vision-language models (LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM): the parts of the text path that
change when a vision encoder feeds the language model.

Models load through transformers' image-text-to-text auto class with their processor (:mod:`vaccine.models`);
everything else keeps the text path's shape and is chosen by what was loaded, so a text decoder runs exactly
as before:

- :mod:`.structure`: where the language model sits inside the VLM, found by structure (the module that owns
  the text embedding), so Vaccine perturbs its decoder layers and LoRA adapts its projections, never the
  vision tower's;
- :mod:`.processor`: the processor in the tokenizer's place: its tokenizer, the prompt text with the image
  placeholder, images opened with errors that name them;
- :mod:`.encode`: records with images -> token ids with answer-only labels, and a collator that pads them and
  batches their images through the model's own image processor;
- :mod:`.generate`: batched greedy answers to image+text prompts (HS, refusal rate, self-distillation).

The data (VLGuard's layout, image+text harmful pairs) is :mod:`vaccine.data.vlguard`.
"""
