"""How the shipped ``es-or-en`` dataset was labelled: is this message Spanish? (1 = Spanish).

``datasets/es_or_en.csv`` holds messages of the tiny chat model's corpus (``training/tinyllm/corpus/conversations.jsonl``, roughly half
Spanish and half English; user, assistant and system messages alike).

Labels. The corpus has no language labels, so each message is labelled by a rule
(:func:`language_of`), documented here because it *is* the training data:

* the text is lower-cased and split into words (runs of letters);
* Spanish evidence = the words in :data:`SPANISH_WORDS` (Spanish function words and
  greetings: "de", "el", "qué", "hola", ...), plus every word that contains a letter English
  does not use (á é í ó ú ü ñ), plus every "¿" and "¡";
* English evidence = the words in :data:`ENGLISH_WORDS` ("the", "of", "is", "what", "hello", ...);
* Spanish when the Spanish evidence is larger, English when the English evidence is larger;
  a tie (including 0 to 0, as in "Holaa") is undecided and the message is dropped.

The two word lists are disjoint and leave out words common to both languages ("a", "me",
"no", "hay", "son", "come", ...), so that names such as "La Paz" or "Bogotá" inside an
English sentence do not outvote its English words.

Exact duplicate messages (after stripping whitespace) are kept once, so a text cannot be in
both the training and the held-out split. On the shipped corpus this keeps 818 of the 821
distinct messages (412 Spanish, 406 English); the rule drops "A panda eats mostly bamboo.",
"Holaa" and "Hey, hola".

The training job trains ``es-or-en`` from that CSV like any other text dataset; this module only
documents (and can re-derive) its labels.
"""

from __future__ import annotations

import re

import numpy as np

SPANISH_WORDS = frozenset(
    """
    de la el los las un una unos unas y o que qué es son está están estás estoy soy eres del al en con por para
    como cómo cuál cuáles cuánto cuántos cuántas dónde cuándo quién porque pero muy más menos también sí
    se su sus mi mis tu tus te lo le les nos yo tú usted ella ellos ellas este esta esto ese esa tiene tengo
    puedo puede hace va hola gracias buenas días tardes noches adiós bien sobre todo cuando donde ni sin ya
    hasta luego nada algo algunos algunas dime necesito ayuda vale chao llamo
    """.split()
)
ENGLISH_WORDS = frozenset(
    """
    the of and is are am was were be to in on at for with from by as that this these those it its
    what which who whom whose where when why how do does did can could will would should i you he she we they
    my your his her our their him us them an not yes or but if so than then there here have has had
    hello hi hey thanks thank please sorry ok okay good bye goodbye morning evening night afternoon after before
    some explain
    """.split()
)
_WORD = re.compile(r"[^\W\d_]+")
_SPANISH_LETTER = re.compile(r"[áéíóúüñ]")


def language_evidence(text: str) -> tuple[int, int]:
    """(Spanish evidence, English evidence) of ``text`` under the labelling rule (see the module docstring)."""
    low = text.lower()
    words = _WORD.findall(low)
    spanish = sum(1 for w in words if w in SPANISH_WORDS or _SPANISH_LETTER.search(w))
    spanish += low.count("¿") + low.count("¡")
    english = sum(1 for w in words if w in ENGLISH_WORDS)
    return spanish, english


def language_of(text: str) -> int | None:
    """1 for Spanish, 0 for English, None when the rule cannot decide (the message is dropped)."""
    spanish, english = language_evidence(text)
    if spanish == english:
        return None
    return int(spanish > english)


def labelled_corpus() -> tuple[list[str], np.ndarray]:
    """Every distinct message of the shipped corpus that the rule labels, in corpus order, and its label (int64)."""
    from aprendiz.training.tinyllm.build import load_corpus

    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for conversation in load_corpus():
        for message in conversation:
            text = message["content"].strip()
            if not text or text in seen:
                continue
            seen.add(text)
            label = language_of(text)
            if label is not None:
                texts.append(text)
                labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)
