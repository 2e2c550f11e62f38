"""Text models in the model contract: kinds, capabilities, and refusals in both directions."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.contract import Capability, ModelKind, describe, kind_of, missing, offers
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.text import TextSpec, as_text_model


def test_text_kinds_offer_text_inputs_and_embedding_gradients(minilm, seqcls, digits_cnn):
    assert kind_of(minilm) is ModelKind.TEXT_ENCODER
    assert kind_of(seqcls) is ModelKind.TEXT_CLASSIFIER
    assert Capability.EMBEDDINGS in offers(minilm) and Capability.SCORES not in offers(minilm)
    assert {Capability.SCORES, Capability.EMBEDDING_GRADIENTS} <= offers(seqcls)
    assert Capability.GRADIENTS not in offers(seqcls)  # no gradient on a string
    assert Capability.TEXT_INPUTS not in offers(digits_cnn)
    assert describe(seqcls) == f"'{seqcls.name}' is a text classifier"
    # a declaration that names no input kind means tensors
    assert missing(seqcls, (Capability.SCORES,)) == [Capability.TENSOR_INPUTS]
    assert missing(seqcls, (Capability.SCORES, Capability.TEXT_INPUTS)) == []


def test_an_image_attack_refuses_a_text_classifier(seqcls):
    from mlwarden.attacks.evasion.registry import require_attack

    with pytest.raises(ParameterError, match=r"attack 'pgd' needs gradients, tensor inputs; "
                                             r"'.*' is a text classifier") as info:
        require_attack(seqcls, "pgd")
    assert "that work on it" not in str(info.value)  # no tensor attack works on text
    with pytest.raises(ParameterError, match="attack 'square' needs tensor inputs"):
        require_attack(seqcls, "square")


def test_oracle_views_refuse_text_models(minilm):
    from mlwarden.core.contract import as_oracle

    with pytest.raises(ParameterError, match="membership inference needs class scores, "
                                             "tensor inputs; '.*' is a text encoder"):
        as_oracle(minilm, by="membership inference")


def test_text_code_refuses_tensors_and_tensor_models(seqcls, digits_cnn):
    with pytest.raises(DataError, match=r"takes a list of strings, got a tensor of shape \(2, 5\)"):
        seqcls.logits(torch.zeros(2, 5))
    with pytest.raises(DataError, match="item 1 is a int, not a string"):
        seqcls.predict(["fine", 3])
    with pytest.raises(ParameterError, match="text probing needs pooled embeddings, text inputs"):
        as_text_model(digits_cnn, by="text probing", needs=(Capability.EMBEDDINGS,))
    with pytest.raises(ParameterError, match="needs pooled embeddings; '.*' is a text classifier"):
        as_text_model(seqcls, by="text probing", needs=(Capability.EMBEDDINGS,))
    with pytest.raises(ParameterError, match="batch_size must be positive"):
        seqcls.logits(["a"], batch_size=0)


def test_text_spec_validates_and_round_trips(seqcls):
    spec = seqcls.spec
    assert TextSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="at least 2 class names"):
        TextSpec(max_tokens=8, class_names=("only",), tokenizer="T", tokenizer_sha256="0",
                 vocab_size=10)
    with pytest.raises(ParameterError, match="no classes"):
        _ = TextSpec(max_tokens=8, tokenizer="T", tokenizer_sha256="0", vocab_size=10).num_classes


def test_modes_are_owned_and_restored(seqcls):
    seqcls.train()
    assert all(m.training for m in seqcls.modules())
    first = seqcls.logits(["a calm, well made film"])
    assert seqcls.training  # logits ran in eval mode and gave the mode back
    torch.testing.assert_close(first, seqcls.logits(["a calm, well made film"]))
    seqcls.eval()
    assert not any(m.training for m in seqcls.modules())
