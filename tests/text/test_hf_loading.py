"""Hugging Face folders through the front door: what loads, as what, and what is refused."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError
from mlwarden.core.text import TextClassifier, TextEncoder
from mlwarden.io import load_model

CLASS_NAMES = ("negative", "positive")  # as the seqcls fixture saves them

TEXTS = ["A gripping, beautifully acted film.", "Dull.", "I would not watch it again, ever."]


def linked_copy(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """``target`` with a symlink to each file of ``source`` (weights are not copied)."""
    for file in source.rglob("*"):
        rel = file.relative_to(source)
        if file.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            if str(rel) not in skip:
                (target / rel).symlink_to(file)
    return target


@pytest.fixture
def no_transformers_loading(monkeypatch):
    """Record every from_pretrained call transformers would make."""
    import transformers

    calls: list[str] = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "AutoModelForSequenceClassification"):
        def fail(*args, _name=name, **kwargs):
            calls.append(_name)
            raise AssertionError(f"{_name}.from_pretrained was called")

        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", fail)
    return calls


# -- encoders ----------------------------------------------------------------------------------
def test_minilm_is_an_encoder_with_its_declared_pooling(minilm):
    assert isinstance(minilm, TextEncoder)
    spec = minilm.spec
    assert (spec.pooling, spec.normalize) == ("mean", True)
    assert spec.max_tokens == 256  # sentence_bert_config.json, under the tokenizer's 512
    assert (spec.tokenizer, spec.vocab_size) == ("BertTokenizerFast", 30522)
    assert spec.embedding_dim == 384
    assert len(spec.tokenizer_sha256) == 64 and spec.class_names is None
    assert minilm.spec_assumptions == ()


def test_minilm_embeddings_match_transformers_with_mean_pooling(minilm, minilm_path):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path, local_files_only=True)
    model = AutoModel.from_pretrained(minilm_path, local_files_only=True).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    got = minilm.embed(TEXTS, batch_size=2)  # batches by length, answers in the order given
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[0], got[1], atol=1e-2)


def test_token_embeddings_and_hidden_states_carry_gradients(minilm):
    batch = minilm.encode(TEXTS[:2])
    embeds = minilm.token_embeddings(batch).detach().requires_grad_(True)
    pooled = minilm(attention_mask=batch["attention_mask"], inputs_embeds=embeds)
    torch.testing.assert_close(pooled, minilm.embed(TEXTS[:2]), atol=1e-5, rtol=1e-4)
    pooled[:, 0].sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    states = minilm.hidden_states(batch)
    assert len(states) == 7 and states[-1].shape == (*batch["input_ids"].shape, 384)


def test_long_texts_are_truncated_to_max_tokens(minilm):
    long = "word " * 2000
    assert minilm.token_counts([long]) == [2002]
    assert minilm.encode([long])["input_ids"].shape == (1, 256)
    assert minilm.embed([long]).shape == (1, 384)


def test_bare_encoder_gets_mean_pooling_stated_as_assumed(tmp_path, minilm_path, minilm):
    folder = linked_copy(minilm_path, tmp_path / "bare", skip=("modules.json",))
    bare = load_model(folder, device="cpu")
    assert isinstance(bare, TextEncoder)
    assert (bare.spec.pooling, bare.spec.normalize) == ("mean", False)
    assert bare.spec_assumptions == ("mean pooling assumed (the folder declares no pooling)",)
    plain = bare.embed(TEXTS)
    torch.testing.assert_close(
        torch.nn.functional.normalize(plain, dim=1), minilm.embed(TEXTS), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize(
    ("flags", "pooling"),
    [({"pooling_mode_cls_token": True}, "cls"), ({"pooling_mode_max_tokens": True}, "max")],
)
def test_declared_cls_and_max_pooling(tmp_path, minilm_path, minilm, flags, pooling):
    folder = linked_copy(minilm_path, tmp_path / pooling, skip=("1_Pooling/config.json",))
    config = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": False, **flags}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    encoder = load_model(folder, device="cpu")
    assert encoder.spec.pooling == pooling
    batch = minilm.encode(TEXTS)
    with torch.no_grad():
        hidden = minilm.hidden_states(batch)[-1]
    if pooling == "cls":
        expected = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).bool()
        expected = hidden.masked_fill(~mask, -1e9).amax(1)
    expected = torch.nn.functional.normalize(expected, dim=1)
    torch.testing.assert_close(encoder.embed(TEXTS), expected, atol=1e-5, rtol=1e-4)


def test_unsupported_sentence_transformers_modules_are_refused(tmp_path, minilm_path):
    folder = linked_copy(minilm_path, tmp_path / "dense", skip=("modules.json",))
    modules = json.loads((minilm_path / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="does not support yet: sentence_transformers"):
        load_model(folder)
    (folder / "1_Pooling" / "config.json").unlink()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True})
    )
    (folder / "modules.json").write_text((minilm_path / "modules.json").read_text())
    with pytest.raises(ModelLoadError, match="exactly one of mean, cls and max"):
        load_model(folder)


# -- classifiers -------------------------------------------------------------------------------
def test_sequence_classification_folder_is_a_text_classifier(seqcls, seqcls_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert isinstance(seqcls, TextClassifier)
    assert seqcls.spec.class_names == CLASS_NAMES and seqcls.num_classes == 2
    assert seqcls.spec.max_tokens == 512  # no sentence-transformers config in a saved classifier
    reference = AutoModelForSequenceClassification.from_pretrained(
        seqcls_path, local_files_only=True
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(seqcls_path, local_files_only=True)
    with torch.no_grad():
        expected = reference(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(seqcls.logits(TEXTS, batch_size=1), expected, atol=1e-5, rtol=1e-4)
    probs = seqcls.probabilities(TEXTS)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert seqcls.predict(TEXTS).tolist() == expected.argmax(1).tolist()
    assert seqcls.logits([]).shape == (0, 2)


def test_classifier_gradients_through_input_embeddings(seqcls):
    batch = seqcls.encode(TEXTS)
    embeds = seqcls.token_embeddings(batch).detach().requires_grad_(True)
    logits = seqcls(attention_mask=batch["attention_mask"], inputs_embeds=embeds)
    torch.testing.assert_close(logits.detach(), seqcls.logits(TEXTS), atol=1e-5, rtol=1e-4)
    logits[:, 1].sum().backward()
    assert embeds.grad.abs().sum() > 0
    assert seqcls.input_embeddings().weight.shape == (30522, 384)


def test_a_classifier_folder_without_its_head_weights_is_refused(tmp_path, minilm_path):
    folder = linked_copy(minilm_path, tmp_path / "headless", skip=("config.json",))
    config = json.loads((minilm_path / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "a", "1": "b"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="initialised at random"):
        load_model(folder)


def test_a_scanned_safe_pickle_loads_with_weights_only(
    tmp_path, minilm_path, minilm, monkeypatch
):
    from safetensors.torch import load_file

    folder = linked_copy(minilm_path, tmp_path / "bin", skip=("model.safetensors",))
    torch.save(load_file(minilm_path / "model.safetensors"), folder / "pytorch_model.bin")
    real_load = torch.load
    calls: list[object] = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    encoder = load_model(folder, device="cpu")
    assert calls and all(flag is True for flag in calls), calls
    torch.testing.assert_close(encoder.embed(TEXTS), minilm.embed(TEXTS))


# -- refusals before anything is loaded --------------------------------------------------------
class _RunsACommand:
    """Pickles as a call to os.system; only ever pickled here, never unpickled."""

    def __reduce__(self):
        return (os.system, ("echo owned > /tmp/mlwarden-text-owned",))


def test_a_malicious_pytorch_model_bin_is_refused_before_loading(
    tmp_path, minilm_path, no_transformers_loading, cli
):
    folder = linked_copy(minilm_path, tmp_path / "evil", skip=("model.safetensors",))
    payload = {"embeddings.word_embeddings.weight": _RunsACommand()}
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnsafeArtefactError, match=r"pytorch_model\.bin") as info:
        load_model(folder)
    assert info.value.exit_code == 3
    assert "system" in str(info.value)
    assert no_transformers_loading == []
    result = cli("attack", "evasion", "--model", str(folder), "--data", "digits")
    assert result.code == 3 and "pytorch_model.bin" in result.err
    assert "Traceback" not in result.err
    assert no_transformers_loading == []


def test_a_config_that_needs_remote_code_is_refused_with_its_own_message(
    tmp_path, minilm_path, no_transformers_loading
):
    folder = linked_copy(minilm_path, tmp_path / "remote", skip=("config.json",))
    config = json.loads((minilm_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("import os\nos.system('echo owned')\n")
    with pytest.raises(UnsafeArtefactError, match="needs remote code") as info:
        load_model(folder)
    assert "AutoModel -> modeling_evil.EvilModel" in str(info.value)
    assert "trust_remote_code" in str(info.value)
    assert no_transformers_loading == []


def test_folder_refusals_name_the_problem(tmp_path, minilm_path):
    folder = linked_copy(minilm_path, tmp_path / "noweights", skip=("model.safetensors",))
    with pytest.raises(ModelLoadError, match="has no PyTorch weights"):
        load_model(folder)
    with pytest.raises(ModelLoadError, match="drop the factory"):
        load_model(minilm_path, factory="mlwarden.models:SmallCNN")
    shutil.copy(minilm_path / "model.safetensors", folder / "model.safetensors")
    (folder / "notes.bin").write_bytes(b"\x00\x01garbage that no scanner parses")
    with pytest.raises(ModelLoadError, match=r"cannot read, so it was not loaded: notes\.bin"):
        load_model(folder)


def test_tensor_commands_refuse_a_text_model_in_one_line(minilm_path, cli, tmp_path):
    result = cli("attack", "evasion", "--model", str(minilm_path), "--data", "digits")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip() == (
        "error: this command needs tensor inputs; 'model' is a text encoder (text models load "
        "through mlwarden.io.load_model so far; see docs/text.md)"
    )


def test_the_tokenizer_hash_tells_vocabularies_apart(tmp_path, minilm_path, minilm):
    from mlwarden.io.hf import tokenizer_sha256

    assert tokenizer_sha256(linked_copy(minilm_path, tmp_path / "same")) == (
        minilm.spec.tokenizer_sha256
    )
    other = linked_copy(minilm_path, tmp_path / "other", skip=("vocab.txt",))
    vocab = (minilm_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[2000] = "mlwarden"
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    assert tokenizer_sha256(other) != minilm.spec.tokenizer_sha256
