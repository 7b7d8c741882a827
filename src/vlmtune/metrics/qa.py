"""Short-answer QA metrics that reproduce the official evaluation scripts.

Every function scores one prediction against its reference answers and returns
a float in [0, 1]. The official scripts' quirks are kept on purpose: the point
of these metrics is to produce numbers comparable with published results, so a
"fix" here would make our scores incomparable.

Sources replicated:
  * SQuAD v1.1 ``evaluate-v1.1.py`` (``squad_f1``, ``exact_match``)
  * google-research/pix2struct ``pix2struct/metrics.py`` (``relaxed_accuracy``)
  * DocVQA / InfographicVQA RRC evaluation script (``anls``)
  * GT-Vision-Lab/VQA ``vqaEval.py`` (``vqa_accuracy``)

With no references at all the official scripts crash (``max([])`` or a
division by zero); we return 0.0 instead.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

# --------------------------------------------------------------------------
# SQuAD v1.1
# --------------------------------------------------------------------------
_SQUAD_PUNCT = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _squad_normalize(text: str) -> str:
    """SQuAD v1.1 ``normalize_answer``: lower, drop punctuation and articles, fix spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def _squad_f1_one(prediction: str, reference: str) -> float:
    """Token-multiset F1 against a single reference."""
    pred_tokens = _squad_normalize(prediction).split()
    ref_tokens = _squad_normalize(reference).split()
    num_same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if num_same == 0:
        # v1.1 returns 0 here even when both answers normalize to "" (v2.0
        # changed this); we keep v1.1 so scores match published SQuAD numbers.
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(ref_tokens)
    return (2 * precision * recall) / (precision + recall)


def _max_over(metric: Callable[[str, str], float], prediction: str,
              references: Sequence[str]) -> float:
    """Best score over references (``metric_max_over_ground_truths``); 0.0 if none."""
    return max((float(metric(prediction, ref)) for ref in references), default=0.0)


def squad_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD v1.1 token F1, maximised over the references.

    Example:
        >>> round(squad_f1("The cat sat", ["a cat sat on the mat"]), 4)
        0.6667
    """
    return _max_over(_squad_f1_one, prediction, references)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """SQuAD v1.1 exact match on normalized strings, maximised over references.

    Example:
        >>> exact_match("The Cat!", ["cat", "dog"])
        1.0
    """
    return _max_over(lambda p, r: _squad_normalize(p) == _squad_normalize(r),
                     prediction, references)


# --------------------------------------------------------------------------
# Relaxed accuracy (ChartQA / PlotQA style, pix2struct implementation)
# --------------------------------------------------------------------------
def _to_float(text: str) -> float | None:
    """pix2struct ``_to_float``: "12%" -> 0.12, "3.5" -> 3.5, otherwise None."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def _relaxed_one(prediction: str, target: str, tolerance: float) -> bool:
    """pix2struct ``relaxed_correctness`` for a single target."""
    prediction_float = _to_float(prediction)
    target_float = _to_float(target)
    # ``target_float`` is tested for truthiness, not ``is not None``: a zero
    # target falls through to the string comparison ("0.0" != "0"), as upstream.
    if prediction_float is not None and target_float:
        change = abs(prediction_float - target_float) / abs(target_float)
        return change <= tolerance
    # No .strip() here: the official code does not strip model output, so
    # " yes" != "yes". (float() itself ignores surrounding whitespace, so
    # numbers are unaffected.) Callers that want stripping must do it first.
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, references: Sequence[str],
                     tolerance: float = 0.05) -> float:
    """Relaxed correctness: numbers within ``tolerance`` relative error, else exact.

    Example:
        >>> relaxed_accuracy("105", ["100"]), relaxed_accuracy("50%", ["0.5"])
        (1.0, 1.0)
    """
    return _max_over(lambda p, r: _relaxed_one(p, r, tolerance), prediction, references)


# --------------------------------------------------------------------------
# ANLS (DocVQA / InfographicVQA / ST-VQA)
# --------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    """Character-level edit distance (insert, delete, substitute all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _anls_normalize(text: str) -> str:
    """``' '.join(answer.strip().lower().split())``, applied by the DocVQA script to both sides."""
    return " ".join(text.strip().lower().split())


def anls(prediction: str, references: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity for one question (DocVQA script).

    Matches ``evaluate_method`` of the DocVQA / InfographicVQA evaluation script distributed by the RRC
    (rrc.cvc.uab.es/?ch=17, also docvqa.org): ``1 - min(NL)`` over the references, zeroed when that
    *similarity* is ``< threshold`` (its default 0.5), so a normalized distance of exactly 0.5 keeps 0.5.
    Whitespace, as there: the edit distance is taken between the normalized strings (runs of any
    whitespace collapsed to one space, ends stripped, lower-cased) but the denominator is the *raw*
    lengths, ``max(len(answer.upper()), len(det.upper()))``: "a    b" against "ab" is 1 - 1/6, not
    1 - 1/3 as with normalized lengths (the pip ``anls`` package's choice). ``upper()`` can lengthen a
    string ("ß" -> "SS"), which counts too; two empty answers score 1.0.

    Example:
        >>> anls("abcd", ["xyz", "ABCE"])
        0.75
    """
    if not references:
        return 0.0
    det = _anls_normalize(prediction)
    distances = []
    for answer in references:
        dist = levenshtein(_anls_normalize(answer), det)
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else float(dist) / float(length))
    score = 1 - min(distances)
    return 0.0 if score < threshold else score


# --------------------------------------------------------------------------
# VQA accuracy (GT-Vision-Lab/VQA vqaEval.py)
# --------------------------------------------------------------------------
# Verbatim from vqaEval.py, including entries that can never fire (capitalised
# keys such as "Im" after lower-casing) and the reversed "somebody'd" entry.
_VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_VQA_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_VQA_ARTICLES = ("a", "an", "the")
# Python 2 semantics (the official script is Python 2): a str pattern without re.UNICODE makes \d ASCII-only
# there, so "\u0661,\u0662" (Arabic-Indic digits) is not a digit comma. re.ASCII gives the same in Python 3.
# "(?!<=\d)" is upstream's typo for a lookbehind; as written it never blocks a
# match, so every period not followed by a digit is removed. Kept verbatim.
_VQA_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_VQA_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)
_VQA_PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_",
              "-", ">", "<", "@", "`", ",", "?", "!")
# Upstream calls periodStrip.sub("", text, re.UNICODE): the flag lands in the
# *count* slot, so at most 32 periods are removed. Reproduced as-is.
_VQA_PERIOD_COUNT = int(re.UNICODE)


def _vqa_punctuation(text: str) -> str:
    """vqaEval ``processPunctuation``: drop or space out punctuation, strip periods."""
    out = text
    digit_comma = _VQA_COMMA_STRIP.search(text) is not None
    for p in _VQA_PUNCT:
        # The test looks at the *original* text, not the partly cleaned one.
        if (p + " " in text or " " + p in text) or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _VQA_PERIOD_STRIP.sub("", out, count=_VQA_PERIOD_COUNT)


def _vqa_digit_article(text: str) -> str:
    """vqaEval ``processDigitArticle``: number words -> digits, drop articles, contractions."""
    words = [_VQA_NUMBERS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _VQA_ARTICLES]
    return " ".join(_VQA_CONTRACTIONS.get(word, word) for word in words)


def _vqa_clean(text: str) -> str:
    """Both sides of a comparison go through punctuation, then digits/articles/contractions."""
    return _vqa_digit_article(_vqa_punctuation(text))


def _vqa_whitespace(text: str) -> str:
    """Newlines and tabs become spaces, then the ends are stripped (done to every answer, always)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy: leave-one-out ``min(1, #matches / 3)`` averaged over annotators.

    Mirrors ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` ``VQAEval.evaluate`` in GT-Vision-Lab/VQA at
    master (commit a013f00, "Fixed processing answers bug", 2021), the version the VQAv2 leaderboard's
    evaluation uses. Every answer, the prediction and each annotator's, has newlines/tabs turned into
    spaces and its ends stripped. Only when the annotators' answers then disagree
    (``len(set(gtAnswers)) > 1``) are the prediction AND the answers normalized (punctuation, number
    words, articles, contractions); when they agree, the prediction is compared as it is, so
    ``"dont know"`` against unanimous ``"don't know"`` scores 0.0 and ``"Yes"`` against ``"yes"`` too.
    (The official answers are already normalized, so this bites only models that answer in another form.)
    Leave-one-out is positional: upstream compares answer dicts carrying unique ids.

    Example:
        >>> round(vqa_accuracy("two", ["2", "2"] + ["3"] * 8), 4)
        0.6
    """
    if not references:
        return 0.0
    answer = _vqa_whitespace(prediction)
    gts = [_vqa_whitespace(gt) for gt in references]
    if len(set(gts)) > 1:
        gts = [_vqa_clean(gt) for gt in gts]
        answer = _vqa_clean(answer)
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        accs.append(min(1.0, float(sum(gt == answer for gt in others)) / 3))
    return float(sum(accs)) / len(accs)
