"""Loading, fingerprints, pruned-model save/load and attention capture."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import build_tiny_model, random_inputs, real_tokenizer, small_bert
from pruning.capture import capture_sentences
from pruning.heads import head_grid, kept_heads, remove_heads
from pruning.models import (
    ModelSpec,
    load_classifier,
    load_pruned,
    model_fingerprint,
    pick_device,
    save_pruned,
)


@pytest.mark.parametrize("empty_layer", [False, True])
def test_pruned_model_saves_and_reloads_with_identical_logits(
    arch: str, tmp_path, empty_layer: bool
) -> None:
    model = build_tiny_model(arch, seed=3)
    mask = torch.ones(head_grid(model), dtype=torch.bool)
    mask[0, 1:] = False
    if empty_layer:
        mask[2] = False
    pruned = remove_heads(model, mask)
    folder = save_pruned(pruned, None, tmp_path / "pruned")
    loaded = load_pruned(folder, device="cpu")
    inputs = random_inputs()
    with torch.no_grad():
        assert torch.equal(pruned(**inputs).logits, loaded.model(**inputs).logits)
    assert kept_heads(loaded.model) == kept_heads(pruned)
    assert model_fingerprint(loaded.model) == model_fingerprint(pruned)
    meta = json.loads((folder / "headscope.json").read_text())
    assert meta["kept_heads"] == kept_heads(pruned)


def test_dense_folder_also_opens_as_a_plain_hugging_face_model(tmp_path) -> None:
    model = build_tiny_model("bert", seed=5)
    folder = save_pruned(model, None, tmp_path / "dense")
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    inputs = random_inputs()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, plain(**inputs).logits, atol=1e-6)


def test_save_replaces_atomically_and_leaves_no_temporary_folders(tmp_path) -> None:
    model = build_tiny_model("bert")
    target = tmp_path / "m"
    save_pruned(model, None, target)
    save_pruned(remove_heads(model, torch.eye(3, 4, dtype=torch.bool)), None, target)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert kept_heads(load_pruned(target).model) == [[0], [1], [2]]


def test_fingerprint_tracks_weights_not_identity(arch: str) -> None:
    a = build_tiny_model(arch, seed=1)
    b = build_tiny_model(arch, seed=1)
    c = build_tiny_model(arch, seed=2)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(c)
    mask = torch.ones(head_grid(a), dtype=torch.bool)
    mask[0, 0] = False
    assert model_fingerprint(remove_heads(a, mask)) != model_fingerprint(a)


def test_local_folder_with_tokenizer_round_trips_through_load_classifier(tmp_path) -> None:
    tokenizer = real_tokenizer()
    model = small_bert(("negative", "neutral", "positive"))
    mask = torch.ones(head_grid(model), dtype=torch.bool)
    mask[1] = False
    pruned = remove_heads(model, mask)
    folder = save_pruned(pruned, tokenizer, tmp_path / "with_tok")
    loaded = load_classifier(ModelSpec.local(folder), device="cpu")
    assert loaded.label_names == ("negative", "neutral", "positive")
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(pruned(**batch).logits, loaded.model(**batch).logits)
    with pytest.raises(ValueError, match="prepare a model"):
        load_classifier(ModelSpec.local(folder), label_names=("fresh", "rotten"))


def test_bad_model_sources_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier(ModelSpec.local(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_classifier(ModelSpec.local(tmp_path / "empty"))
    with pytest.raises(ValueError, match="needs a path"):
        ModelSpec(source="local")
    with pytest.raises(ValueError, match="Unknown model source"):
        ModelSpec(source="ftp", path="x")  # type: ignore[arg-type]


def test_unsupported_local_architecture_is_refused(tmp_path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="not supported"):
        load_classifier(ModelSpec.local(tmp_path / "gpt2"))


def test_pick_device_defaults_to_an_available_device() -> None:
    device = pick_device()
    assert device.type in ("cpu", "cuda", "mps")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_capture_marks_removed_heads_and_matches_dense_heads(arch: str) -> None:
    tokenizer = real_tokenizer()
    model = build_tiny_model(arch, seed=9)
    model.resize_token_embeddings(len(tokenizer))
    sentences = ["the film is a delight", "no"]
    dense = capture_sentences(model, tokenizer, sentences)
    mask = torch.ones(head_grid(model), dtype=torch.bool)
    mask[0, 2] = False
    mask[2] = False
    pruned = capture_sentences(remove_heads(model, mask), tokenizer, sentences)
    for d, p in zip(dense, pruned, strict=True):
        n = len(d.tokens)
        assert d.attentions.shape == (3, 4, n, n)
        assert d.queries is not None and d.queries.shape == (3, 4, n, 8)
        assert not torch.isnan(d.attentions).any()
        assert torch.allclose(d.attentions.sum(-1), torch.ones(3, 4, n), atol=1e-5)
        assert torch.isnan(p.attentions[0, 2]).all() and torch.isnan(p.attentions[2]).all()
        assert torch.equal(p.present, mask)
        # Layer 0 sees the same input, so its surviving heads attend exactly as before.
        assert torch.allclose(p.attentions[0, [0, 1, 3]], d.attentions[0, [0, 1, 3]], atol=1e-6)
        assert torch.allclose(p.keys[0, [0, 1, 3]], d.keys[0, [0, 1, 3]], atol=1e-6)
    assert dense[1].tokens[0] in ("[CLS]", "<s>")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="non-empty"):
        capture_sentences(model, tokenizer, ["  "])


@pytest.mark.slow
def test_default_model_loads_offline_with_a_fresh_head() -> None:
    loaded = load_classifier(label_names=("fresh", "rotten"), device="cpu")
    assert head_grid(loaded.model) == (6, 12)
    assert loaded.label_names == ("fresh", "rotten")
    batch = loaded.tokenizer(["a triumph", "a mess"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert loaded.model(**batch).logits.shape == (2, 2)
    assert len(loaded.fingerprint()) == 64
