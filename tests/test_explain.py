"""LIME / SHAP attributions: words, determinism, the batched predictor, caching, model refs.

A toy classifier with the real tokenizer makes the right answers known: its class-1 logit is a
weighted count of chosen words, so the word that drives the prediction is known exactly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig

from conftest import prepared_tiny_setup, real_tokenizer, small_bert
from pruning.attribution import Attribution, agreement, join_words, seed_stability, split_words
from pruning.explain import (
    BatchedPredictor,
    ExplanationCache,
    explain,
    explain_models,
    explanation_key,
    shap_masker,
)
from pruning.jobs import JobCancelled
from pruning.run_models import ModelRef, load_ref, model_refs, ref_fingerprint

SENTENCE = "A truly terrible film, with a plot that drags and a cast that tries."


class WordModel(nn.Module):
    """Class-1 logit = sum of the weights of the text's tokens; class-0 logit = 0.

    Records whether it ran in training mode, so tests can check the predictor's eval switch.
    """

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        tokenizer = real_tokenizer()
        self.config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=4,
            num_hidden_layers=1,
            num_attention_heads=1,
            max_position_embeddings=128,
            num_labels=2,
        )
        self.weight = nn.Embedding(tokenizer.vocab_size, 1)
        with torch.no_grad():
            self.weight.weight.zero_()
            for word, value in weights.items():
                self.weight.weight[tokenizer.convert_tokens_to_ids(word), 0] = value
        self.modes: list[bool] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        self.modes.append(self.training)
        score = (self.weight(input_ids).squeeze(-1) * attention_mask).sum(dim=1)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], dim=1))


def terrible_predictor() -> BatchedPredictor:
    """A model whose output depends on the single word "terrible"."""
    return BatchedPredictor(WordModel({"terrible": 4.0}), real_tokenizer())


def mixed_predictor() -> BatchedPredictor:
    """Several words with different weights: attributions with a clear but non-trivial order."""
    weights = {"terrible": 3.0, "drags": 1.5, "truly": 0.7, "cast": -1.0, "film": -0.4}
    return BatchedPredictor(WordModel(weights), real_tokenizer())


# ---------------------------------------------------------------------------------------------
# Words


def test_split_words_gives_whitespace_delimited_spans() -> None:
    text = "  A terrible film,\tthat drags.\n"
    spans = split_words(text)
    assert [text[a:b] for a, b in spans] == ["A", "terrible", "film,", "that", "drags."]
    assert spans[0] == (2, 3)
    assert split_words("") == [] and split_words(" \n\t ") == []
    assert join_words(text, spans, {4, 1}) == "terrible drags."


def test_lime_and_shap_perturb_exactly_the_split_words() -> None:
    from lime.lime_text import IndexedString

    text = " A terrible film,  really  boring. "
    words = [text[a:b] for a, b in split_words(text)]
    indexed = IndexedString(
        text, split_expression=lambda raw: [raw[a:b] for a, b in split_words(raw)], bow=False
    )
    assert [indexed.word(i) for i in range(indexed.num_words())] == words
    masker = shap_masker()
    assert masker.feature_names(text)[0][1:-1] == words
    # Every text the model sees during LIME and SHAP is a subset of the words, space-joined.
    predictor = mixed_predictor()
    seen: list[str] = []
    for method in ("lime", "shap"):
        seen.clear()
        explain(_Spy(predictor, seen), text, method=method, samples=40)  # type: ignore[arg-type]
        assert len(seen) > 5
        for perturbed in seen:
            kept = perturbed.split(" ") if perturbed else []
            assert perturbed == " ".join(kept)
            positions = iter(range(len(words)))
            assert all(any(words[i] == w for i in positions) for w in kept), perturbed


class _Spy:
    """A predictor wrapper that records every text it is asked about."""

    def __init__(self, inner: BatchedPredictor, seen: list[str]) -> None:
        self.inner, self.seen = inner, seen

    def __call__(self, texts: list[str], **kwargs: object) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner(texts, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_one_value_per_word(method: str) -> None:
    predictor = BatchedPredictor(small_bert(), real_tokenizer())
    result = explain(predictor, SENTENCE, method=method, samples=40, seed=1)
    assert len(result.values) == len(result.words) == len(split_words(SENTENCE)) == 14
    assert result.spans == tuple(split_words(SENTENCE))
    assert result.method == method and result.samples == 40
    assert result.target == result.predicted
    assert math.isclose(sum(result.probabilities), 1.0, rel_tol=1e-9)
    assert all(math.isfinite(v) for v in result.values)


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_the_single_word_the_model_uses_is_ranked_first(method: str) -> None:
    result = explain(terrible_predictor(), SENTENCE, method=method, samples=200, seed=0)
    assert result.target == 1 and result.probabilities[1] > 0.98
    best = int(np.argmax(result.values))
    assert result.words[best] == "terrible"
    others = [abs(v) for i, v in enumerate(result.values) if i != best]
    assert result.values[best] > 0.3 and max(others) < 0.1 * result.values[best]


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_a_one_word_text_works(method: str) -> None:
    result = explain(terrible_predictor(), "terrible", method=method, samples=20)
    assert result.words == ("terrible",) and len(result.values) == 1
    if method == "shap":  # exact: the only word carries the whole change
        sigmoid = 1 / (1 + math.exp(-4.0))
        assert result.values[0] == pytest.approx(sigmoid - 0.5, abs=1e-6)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="type a sentence"):
        explain(terrible_predictor(), text, method="lime", samples=20)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="lime' or 'shap"):
        explain(terrible_predictor(), SENTENCE, method="anchors", samples=20)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples"):
        explain(terrible_predictor(), SENTENCE, method="lime", samples=3)
    with pytest.raises(ValueError, match="target"):
        explain(terrible_predictor(), SENTENCE, method="lime", samples=20, target=2)


def test_lime_is_deterministic_per_seed() -> None:
    first = explain(mixed_predictor(), SENTENCE, method="lime", samples=80, seed=3)
    again = explain(mixed_predictor(), SENTENCE, method="lime", samples=80, seed=3)
    other = explain(mixed_predictor(), SENTENCE, method="lime", samples=80, seed=4)
    assert first.values == again.values and first.base_value == again.base_value
    assert other.values != first.values
    stability = seed_stability([first, other])
    assert stability["seeds"] == 2.0 and -1.0 <= stability["min_spearman"] <= 1.0


def test_shap_is_deterministic_and_leaves_numpy_random_alone() -> None:
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = explain(mixed_predictor(), SENTENCE, method="shap", samples=60, seed=5)
    assert np.random.rand() == expected_next
    again = explain(mixed_predictor(), SENTENCE, method="shap", samples=60, seed=5)
    assert first.values == again.values


def test_an_explicit_target_flips_the_signs_for_two_classes() -> None:
    toward_one = explain(mixed_predictor(), SENTENCE, method="shap", samples=60, target=1)
    toward_zero = explain(mixed_predictor(), SENTENCE, method="shap", samples=60, target=0)
    assert toward_zero.target == 0
    np.testing.assert_allclose(toward_zero.values, -np.asarray(toward_one.values), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# The batched predictor


def test_batched_predictions_equal_one_text_at_a_time_and_modes_are_restored() -> None:
    model = small_bert()
    texts = [SENTENCE, "terrible", "", SENTENCE, "a b c d e f g h", "word " * 300, "terrible"]
    batched = BatchedPredictor(model, real_tokenizer(), batch_size=3)
    single = BatchedPredictor(model, real_tokenizer(), one_at_a_time=True)
    model.train()
    got = batched(texts)
    assert model.training
    model.eval()
    want = single(texts)
    assert not model.training
    assert got.dtype == np.float64 and got.shape == (7, 2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    assert np.array_equal(got[0], got[3]) and np.array_equal(got[1], got[6])
    assert (batched.calls, batched.texts_seen, batched.texts_computed) == (1, 7, 5)
    toy = WordModel({"terrible": 1.0})
    toy.train()
    BatchedPredictor(toy, real_tokenizer())(["terrible film"])
    assert toy.modes == [False] and toy.training


def test_predictor_reports_batches_and_can_be_cancelled() -> None:
    predictor = BatchedPredictor(small_bert(), real_tokenizer(), batch_size=2)
    reports: list[tuple[int, int]] = []
    predictor([f"text {i}" for i in range(5)], on_batch=lambda d, t: reports.append((d, t)))
    assert reports[-1] == (5, 5) and [d for d, _ in reports] == sorted(d for d, _ in reports)
    with pytest.raises(JobCancelled):
        predictor(["a", "b", "c"], should_stop=lambda: True)
    with pytest.raises(ValueError, match="list of texts"):
        predictor("one string")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Attribution data, agreement and the cache


def _attribution(values: tuple[float, ...], **changes: object) -> Attribution:
    words = tuple(f"w{i}" for i in range(len(values)))
    text = " ".join(words)
    fields: dict[str, object] = {
        "method": "lime", "model_label": "original", "model_key": "prepared:abcd",
        "text": text, "words": words, "spans": tuple(split_words(text)), "values": values,
        "target": 1, "label_names": ("neg", "pos"), "probabilities": (0.25, 0.75),
        "samples": 100, "seed": 0, "seconds": 0.5, "base_value": 0.1,
    }  # fmt: skip
    fields.update(changes)
    return Attribution(**fields)  # type: ignore[arg-type]


def test_attribution_json_round_trip() -> None:
    original = _attribution((0.5, -0.25, 0.0), base_value=None)
    again = Attribution.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original and again.predicted == 1 and again.target_name == "pos"
    with pytest.raises(ValueError, match="one value"):
        _attribution((0.5,), words=("a", "b"))


def test_agreement_with_itself_and_with_a_reversal() -> None:
    a = _attribution((0.9, 0.1, -0.3, 0.4, 0.0, 0.2))
    same = agreement(a, a, k=3)
    assert same["topk_overlap"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    assert same["prob_a"] == same["prob_b"] == 0.75 and same["same_prediction"] == 1.0
    reversed_ = _attribution(tuple(-v for v in a.values), probabilities=(0.6, 0.4))
    opposite = agreement(a, reversed_, k=3)
    assert opposite["spearman"] == pytest.approx(-1.0) and opposite["topk_overlap"] == 0.0
    assert opposite["prob_b"] == 0.4 and opposite["same_prediction"] == 0.0
    flat = agreement(a, _attribution((0.0,) * 6))
    assert math.isnan(flat["spearman"]) and flat["topk_overlap"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="different texts"):
        agreement(a, _attribution((0.1, 0.2)))


def test_cache_round_trip_and_a_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    cache = ExplanationCache(tmp_path / "explanations")
    ref = ModelRef(kind="prepared", key="abcd1234abcd1234", label="original")
    key = explanation_key(ref, "a b", "lime", 100, 0, None)
    assert key == explanation_key(ref_fingerprint(ref), "a b", "lime", 100, 0, None)
    variants = {
        explanation_key(ref, "a b ", "lime", 100, 0, None),
        explanation_key(ref, "a b", "shap", 100, 0, None),
        explanation_key(ref, "a b", "lime", 101, 0, None),
        explanation_key(ref, "a b", "lime", 100, 1, None),
        explanation_key(ref, "a b", "lime", 100, 0, 1),
        explanation_key("run:abcd1234abcd1234", "a b", "lime", 100, 0, None),
    }
    assert len(variants) == 6 and key not in variants
    assert cache.get(key) is None
    attribution = _attribution((0.5, -0.5))
    path = cache.put(key, attribution)
    assert cache.get(key) == attribution and path.parent == cache.root
    assert not [p for p in cache.root.iterdir() if p.name.endswith(".tmp")]
    path.write_text('{"key": "' + key + '", "attribution": {"version": 1, "meth')
    assert cache.get(key) is None
    assert not path.exists() and any(".corrupt-" in p.name for p in cache.root.iterdir())
    cache.put(key, attribution)
    assert cache.get(key) == attribution
    with pytest.raises(ValueError, match="explanation key"):
        cache.get("../../etc/passwd")


def test_default_cache_lives_under_headscope_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tmp_path / "home"))
    assert ExplanationCache().root == tmp_path / "home" / "explanations"


# ---------------------------------------------------------------------------------------------
# Model references and explaining several models


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A prepared tiny BERT and two random-pruning runs: one stores its model, one does not."""
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("explain_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    common = {"method": "random", "model": model, "data": data, "score_examples": 8,
              "eval_examples": 8, "device": "cpu"}  # fmt: skip
    bare = run_pruning(RunRequest(config={"sparsity": 0.5}, name="bare", **common))
    kept = run_pruning(
        RunRequest(config={"sparsity": 0.25}, recovery_steps=1, name="kept", seed=1, **common)
    )
    prepared = ModelStore().get(str(bare.model["prepared_key"]))
    yield {"home": home, "prepared": prepared, "bare": bare, "kept": kept, "store": RunStore()}
    patch.undo()


@pytest.fixture
def in_tiny_home(tiny_runs: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_runs["home"]))
    return tiny_runs


def test_model_refs_and_load_ref(in_tiny_home: dict) -> None:
    from pruning.heads import heads_per_layer, remove_heads

    prepared, bare, kept = in_tiny_home["prepared"], in_tiny_home["bare"], in_tiny_home["kept"]
    assert not bare.has_model and kept.has_model
    refs = model_refs(prepared, in_tiny_home["store"])
    assert [r.kind for r in refs] == ["prepared", "run", "run"]
    assert refs[0].label == "original" and refs[0].key == prepared.key
    assert [r.key for r in refs[1:]] == [kept.key, bare.key]  # newest first
    assert refs[1].label == f"kept · {kept.key[:6]}"
    assert ref_fingerprint(refs[1]) == f"run:{kept.key}"
    base = load_ref(refs[0], device="cpu")
    rebuilt = load_ref(refs[2], device="cpu")
    assert heads_per_layer(rebuilt.model) == bare.mask.sum(dim=1).tolist()
    texts = ["a lovely film", "an awful plot, really boring"]
    want = BatchedPredictor(remove_heads(base.model, bare.mask), base.tokenizer)(texts)
    np.testing.assert_allclose(BatchedPredictor(rebuilt.model, rebuilt.tokenizer)(texts), want)
    stored = load_ref(refs[1], device="cpu")
    assert heads_per_layer(stored.model) == kept.mask.sum(dim=1).tolist()
    assert stored.label_names == base.label_names
    with pytest.raises(ValueError, match="No stored run"):
        load_ref(ModelRef("run", "0" * 16, "gone"))
    with pytest.raises(ValueError, match="No prepared model"):
        load_ref(ModelRef("prepared", "0" * 16, "gone"))


def test_explain_models_shares_the_first_models_target_and_caches(
    in_tiny_home: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pruning.explain as explain_module

    refs = model_refs(in_tiny_home["prepared"], in_tiny_home["store"])
    cache = ExplanationCache()
    fractions: list[float] = []
    results = explain_models(
        refs, SENTENCE, methods=["lime", "shap"], samples=30, seed=0, device="cpu",
        cache=cache, on_progress=lambda f, m: fractions.append(f),
    )  # fmt: skip
    assert [(a.model_label, a.method) for a in results] == [
        (r.label, m) for r in refs for m in ("lime", "shap")
    ]
    assert len({a.target for a in results}) == 1 and results[0].target == results[0].predicted
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    monkeypatch.setattr(explain_module, "load_ref", _refuse_loading)
    again = explain_models(
        refs, SENTENCE, methods=["lime", "shap"], samples=30, seed=0, cache=cache
    )
    assert again == results
    with pytest.raises(JobCancelled):
        explain_models(
            refs, SENTENCE, methods=["lime"], samples=31, seed=0, should_stop=lambda: True
        )


def _refuse_loading(*args: object, **kwargs: object) -> None:
    raise AssertionError("a cached explanation loaded a model")


def test_explain_models_uses_given_models() -> None:
    ref = ModelRef("run", "f" * 16, "toy")
    toy = SimpleNamespace(
        model=WordModel({"terrible": 4.0}), tokenizer=real_tokenizer(), label_names=("no", "yes")
    )
    loaded = {ref_fingerprint(ref): toy}
    (result,) = explain_models(
        [ref],
        SENTENCE,
        methods=["lime"],
        samples=50,
        seed=0,
        loaded=loaded,  # type: ignore[arg-type]
    )
    assert result.label_names == ("no", "yes") and result.model_key == "run:" + "f" * 16
    assert result.words[int(np.argmax(result.values))] == "terrible"
    assert re.search("terrible", result.text)
