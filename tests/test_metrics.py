"""Metrics against hand-computed values from the official definitions, quirks included."""

import json

import pytest

from vlmtune.metrics import (
    FieldScores,
    aggregate_field_scores,
    anls,
    exact_match,
    field_scores,
    levenshtein,
    relaxed_accuracy,
    squad_f1,
    vqa_accuracy,
)

# ---------------------------------------------------------------- SQuAD v1.1


def test_squad_f1_partial_overlap():
    # "cat sat" vs "cat sat on mat": P = 1, R = 1/2 -> F1 = 2/3
    assert squad_f1("The cat sat", ["a cat sat on the mat"]) == pytest.approx(2 / 3)


def test_squad_f1_counts_token_multiset():
    # common = {cat: 1, dog: 1}; P = R = 2/3
    assert squad_f1("cat cat dog", ["cat dog dog"]) == pytest.approx(2 / 3)


def test_squad_articles_only_as_whole_words():
    assert exact_match("an apple", ["apple"]) == 1.0
    assert squad_f1("another apple", ["apple"]) == pytest.approx(2 / 3)


def test_squad_punctuation_and_case():
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("U.S.A.", ["usa"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0


def test_squad_max_over_references():
    assert squad_f1("cat", ["dog", "the cat"]) == 1.0
    assert exact_match("dog", ["cat", "Dog."]) == 1.0


def test_squad_empty_answers_keep_v11_quirk():
    # v1.1: num_same == 0 -> F1 0, even when both normalize to "".
    assert squad_f1("", [""]) == 0.0
    assert squad_f1("the", ["a"]) == 0.0
    assert exact_match("", [""]) == 1.0
    assert exact_match("the", ["a"]) == 1.0


def test_squad_no_references():
    assert squad_f1("x", []) == 0.0
    assert exact_match("x", []) == 0.0


# ------------------------------------------------------- relaxed accuracy


def test_relaxed_five_percent_boundary():
    assert relaxed_accuracy("105", ["100"]) == 1.0
    assert relaxed_accuracy("95", ["100"]) == 1.0
    assert relaxed_accuracy("105.1", ["100"]) == 0.0


def test_relaxed_percent_prediction():
    assert relaxed_accuracy("50%", ["0.5"]) == 1.0
    assert relaxed_accuracy("5%", ["5"]) == 0.0


def test_relaxed_zero_target_falls_back_to_string_compare():
    assert relaxed_accuracy("0.0", ["0"]) == 0.0
    assert relaxed_accuracy("0", ["0"]) == 1.0


def test_relaxed_strings_case_insensitive_but_not_stripped():
    assert relaxed_accuracy("Yes", ["yes"]) == 1.0
    assert relaxed_accuracy(" yes", ["yes"]) == 0.0  # official code does not strip
    assert relaxed_accuracy(" 101 ", ["100"]) == 1.0  # float() ignores whitespace
    assert relaxed_accuracy("abc", ["100"]) == 0.0


def test_relaxed_tolerance_and_max_over_references():
    assert relaxed_accuracy("110", ["100"], tolerance=0.1) == 1.0
    assert relaxed_accuracy("10", ["foo", "10.4"]) == 1.0
    assert relaxed_accuracy("x", []) == 0.0


# ------------------------------------------------------------------- ANLS


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


def test_anls_normalizes_case_and_whitespace():
    assert anls("  Hello   WORLD ", ["hello world"]) == 1.0


def test_anls_partial_and_threshold_boundary():
    assert anls("abcd", ["abce"]) == pytest.approx(0.75)
    assert anls("ab", ["ac"]) == pytest.approx(0.5)  # similarity 0.5 is kept
    assert anls("abc", ["ade"]) == 0.0  # similarity 1/3 < 0.5
    assert anls("abcd", ["abce"], threshold=0.8) == 0.0


def test_anls_denominator_uses_raw_lengths():
    # distance on "ab" vs "ac" is 1, but the official denominator is the raw
    # length max(len("ab  "), len("ac")) = 4 -> 1 - 1/4.
    assert anls("ab  ", ["ac"]) == pytest.approx(0.75)


def test_anls_runs_of_spaces_as_the_docvqa_script():
    # Values computed by the DocVQA/InfographicVQA script's evaluate_method on the same strings: the
    # distance is between collapsed strings, the denominator counts every raw character.
    assert anls("a    b", ["ab"]) == pytest.approx(1 - 1 / 6)  # "a b" vs "ab": 1 edit over 6 raw chars
    assert anls("x   y   z", ["xyz"]) == pytest.approx(1 - 2 / 9)
    assert anls("Total   due", ["total due"]) == 1.0
    assert anls("a\t\tb", ["a b"]) == 1.0  # tabs are whitespace to str.split()
    assert anls("a\u00a0\u00a0b", ["a b c"]) == pytest.approx(1 - 2 / 5)  # so is NBSP
    assert anls("  abcd", ["abce"]) == pytest.approx(1 - 1 / 6)


def test_anls_denominator_counts_upper_case_length():
    # len("ß".upper()) == 2 ("SS"): the distance "ß" vs "s" is 1, over 2.
    assert anls("ß", ["s"]) == pytest.approx(0.5)


def test_anls_max_over_references_and_empty():
    assert anls("abcd", ["xyz", "ABCE"]) == pytest.approx(0.75)
    assert anls("", [""]) == 1.0
    assert anls("", ["abc"]) == 0.0
    assert anls("abc", []) == 0.0


# ------------------------------------------------------------ VQA accuracy


def test_vqa_leave_one_out_two_matches():
    # 2 matching gts see 1 match (1/3); 8 others see 2 (2/3): (2/3 + 16/3) / 10
    assert vqa_accuracy("two", ["2", "2"] + ["3"] * 8) == pytest.approx(0.6)


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (3, 0.9), (4, 1.0)])
def test_vqa_leave_one_out_counts(matches, expected):
    refs = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", refs) == pytest.approx(expected)


# Expected values below are what GT-Vision-Lab/VQA vqaEval.py at master (a013f00) computes, run unmodified
# under Python 2.7 on the same (prediction, answers); the comments say why.


def test_vqa_unanimous_answers_compare_the_prediction_as_it_is():
    # The case of issue 9.4: the answers agree, so nothing is normalized and "dont" != "don't".
    assert vqa_accuracy("dont know", ["don't know", "don't know"]) == 0.0
    assert vqa_accuracy("A dog", ["dog"] * 10) == 0.0
    assert vqa_accuracy("Yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes!"] * 3) == 0.0
    # Unanimous and equal as written: each of 3 answers sees 2 matches, 2/3.
    assert vqa_accuracy("two", ["two"] * 3) == pytest.approx(2 / 3)


def test_vqa_whitespace_is_cleaned_before_the_agreement_check():
    # Newlines/tabs -> spaces and strip happen to every answer first: "yes " and "yes" agree, so "Yes"
    # is compared raw (0.0); a prediction's trailing newline is stripped (2/3, as above).
    assert vqa_accuracy("Yes", ["yes", "yes "]) == 0.0
    assert vqa_accuracy("yes\n", ["yes"] * 3) == pytest.approx(2 / 3)


def test_vqa_disagreeing_answers_normalize_both_sides():
    # 3 of 4 match after normalization: each matching answer sees 2 (2/3), the odd one sees 3 (1).
    for prediction, refs in [("A dog", ["dog"] * 3 + ["cat"]), ("Yes.", ["yes"] * 3 + ["no"]),
                             ("1,000", ["1000"] * 3 + ["no"]), ("red,blue", ["red blue"] * 3 + ["x"]),
                             ("none", ["0"] * 3 + ["1"]), ("two", ["two"] * 3 + ["3"])]:
        assert vqa_accuracy(prediction, refs) == pytest.approx(0.75), (prediction, refs)
    # "yes?" -> "yes " (spaced out) -> "yes" once the answers are also digit/article-processed.
    assert vqa_accuracy("yes", ["yes?"] * 5 + ["no"] * 5) == 1.0


def test_vqa_period_strip_stops_after_32():
    # Upstream passes re.UNICODE (32) as sub()'s count: 40 dots lose 32 on both sides, so the prediction
    # with 40 dots matches the answer with 40 (1/6) and a bare "x" does not.
    assert vqa_accuracy("." * 40 + "x", ["." * 40 + "x", "y"]) == pytest.approx(1 / 6)
    assert vqa_accuracy("x", ["." * 40 + "x", "y"]) == 0.0


def test_vqa_digit_comma_is_ascii_as_in_python_2():
    # "1,2" has a digit comma, so punctuation is dropped ("12", 1/6); Python 2's \d is ASCII-only, so
    # Arabic-Indic digits are not, and the comma becomes a space instead ("\u0661 \u0662", no match).
    assert vqa_accuracy("1,2", ["12", "x"]) == pytest.approx(1 / 6)
    assert vqa_accuracy("\u0661,\u0662", ["\u0661\u0662", "x"]) == 0.0


def test_vqa_no_references():
    assert vqa_accuracy("yes", []) == 0.0


# ------------------------------------------------------------ field scores

TRUTH = {
    "employee": {"name": "Jane Doe", "ssn": "123-45-6789"},
    "employer": {"name": "Acme Corp", "ein": "12-3456789"},
    "wages": 50000.0,
    "federalTax": "1,234.56",
    "multiStateEmployment": {"CA": {"localityName": "San Francisco", "stateWages": 1000}},
}
N_FIELDS = 8


def _prediction(**overrides):
    pred = json.loads(json.dumps(TRUTH))
    pred.update(overrides)
    return pred


def test_fields_perfect_dict():
    s = field_scores(TRUTH, TRUTH)
    assert isinstance(s, FieldScores)
    assert s.overall["tp"] == N_FIELDS
    assert (s.accuracy, s.overall["precision"], s.overall["recall"], s.f1) == (1, 1, 1, 1)
    assert s.coverage == 1.0 and s.json_valid


def test_fields_nested_flattening():
    s = field_scores(TRUTH, TRUTH)
    assert set(s.fields) == {
        "employee_name", "employee_ssn", "employer_name", "employer_ein", "wages",
        "federalTax", "multiStateEmployment_CA_localityName",
        "multiStateEmployment_CA_stateWages",
    }
    lists = field_scores({"items": [{"n": "a"}, {"n": "c"}]}, {"items": [{"n": "a"}, {"n": "b"}]})
    assert lists.fields["items_0_n"]["status"] == "tp"
    assert lists.fields["items_1_n"]["status"] == "fp"


def test_fields_fenced_text_with_amounts_and_chatter():
    pred = _prediction(wages="$50,000.00", federalTax=1234.56)
    text = "Here is the data:\n```json\n" + json.dumps(pred) + "\n```\nLet me know!"
    s = field_scores(text, TRUTH)
    assert s.json_valid and s.overall["tp"] == N_FIELDS


def test_fields_prefill_and_bare_text():
    body = json.dumps(TRUTH)
    assert field_scores(body + "\n```", TRUTH).overall["tp"] == N_FIELDS
    assert field_scores(body, TRUTH).overall["tp"] == N_FIELDS
    assert field_scores("Sure: " + body + " done", TRUTH).json_valid


def test_fields_numeric_tolerance():
    assert field_scores(_prediction(wages=50040), TRUTH).fields["wages"]["correct"]
    wrong = field_scores(_prediction(wages=50100), TRUTH)
    assert wrong.fields["wages"]["status"] == "fp"
    assert field_scores(_prediction(wages=50100), TRUTH, rel_tol=0.01).fields["wages"]["correct"]
    assert not field_scores(_prediction(wages="fifty thousand"), TRUTH).fields["wages"]["correct"]


def test_fields_zero_truth_uses_absolute_tolerance():
    assert field_scores({"a": 0.05}, {"a": 0}).fields["a"]["correct"]
    assert not field_scores({"a": 0.2}, {"a": 0}).fields["a"]["correct"]
    assert field_scores({"a": "$0.00"}, {"a": "0"}).fields["a"]["correct"]


def test_fields_non_numeric_truth_string_compared_as_text():
    pred = _prediction(employee={"name": "Jane Doe", "ssn": "123456789"})
    assert field_scores(pred, TRUTH).fields["employee_ssn"]["status"] == "fp"
    assert field_scores({"ok": "true"}, {"ok": True}).fields["ok"]["correct"]


def test_fields_missing_extra_and_wrong_keys():
    pred = _prediction(
        employee={"name": "Jane Doe"}, employer={"name": "Acme", "ein": "12-3456789"}
    )
    pred["bonus"] = 5
    s = field_scores(pred, TRUTH)
    statuses = {k: v["status"] for k, v in s.fields.items()}
    assert statuses["employee_ssn"] == "fn"
    assert statuses["employer_name"] == "fp"  # wrong counts as FP only
    assert statuses["bonus"] == "fp"
    o = s.overall
    assert (o["tp"], o["fp"], o["fn"], o["n_truth"], o["n_extra"]) == (6, 2, 1, 8, 1)
    assert o["precision"] == pytest.approx(0.75)
    assert o["recall"] == pytest.approx(6 / 7)
    assert o["f1"] == pytest.approx(0.8)
    assert o["accuracy"] == pytest.approx(6 / 9)
    assert s.coverage == pytest.approx(7 / 8)


def test_fields_empty_values():
    assert field_scores({"a": "  ", "b": None}, {"a": "x", "b": 1}).overall["fn"] == 2
    s = field_scores({"a": "x", "b": "y"}, {"a": "x", "b": None})
    assert s.fields["b"]["status"] == "fp" and s.overall["n_extra"] == 1
    both_empty = field_scores({"a": "x", "b": ""}, {"a": "x", "b": None})
    assert "b" not in both_empty.fields and both_empty.accuracy == 1.0


def test_fields_default_categories_are_top_level_keys():
    s = field_scores(_prediction(employer={"name": "X", "ein": "12-3456789"}), TRUTH)
    assert s.categories["employee"]["accuracy"] == 1.0
    assert s.categories["employer"]["tp"] == 1 and s.categories["employer"]["fp"] == 1
    assert s.categories["multiStateEmployment"]["tp"] == 2


def test_fields_category_prefixes():
    cats = {"Employee": "employee", "Multi-State": "multiStateEmployment_", "Empty": "nothing"}
    s = field_scores(TRUTH, TRUTH, cats)
    assert s.categories["Employee"]["tp"] == 2  # "employee" does not take employer_*
    assert s.categories["Multi-State"]["tp"] == 2
    assert s.categories["Other"]["tp"] == 4
    assert s.categories["Empty"]["accuracy"] == 0.0
    assert s.fields["employer_ein"]["category"] == "Other"


def test_fields_case_and_whitespace():
    pred = _prediction(employee={"name": " jane   doe ", "ssn": "123-45-6789"})
    assert not field_scores(pred, TRUTH).fields["employee_name"]["correct"]
    assert field_scores(pred, TRUTH, case_sensitive=False).fields["employee_name"]["correct"]
    spaced = _prediction(employee={"name": "Jane \n Doe", "ssn": "123-45-6789"})
    assert field_scores(spaced, TRUTH).fields["employee_name"]["correct"]


@pytest.mark.parametrize("text", ["not json", "```json\n{\"a\": \n```", "[1, 2]", None])
def test_fields_invalid_json(text):
    s = field_scores(text, TRUTH)
    assert not s.json_valid
    assert s.overall["fn"] == N_FIELDS and s.overall["tp"] == s.overall["fp"] == 0
    assert s.accuracy == 0.0 and s.coverage == 0.0


def test_fields_empty_truth():
    s = field_scores({}, {})
    assert (s.accuracy, s.f1, s.coverage) == (0.0, 0.0, 0.0)
    extra = field_scores({"x": 1}, {})
    assert extra.overall["fp"] == 1 and extra.accuracy == 0.0


def test_fields_to_dict_is_plain_json():
    d = field_scores(_prediction(wages="$50,000"), TRUTH).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["fields"]["wages"] == {
        "truth": 50000.0, "predicted": "$50,000", "correct": True,
        "status": "tp", "category": "wages",
    }


def test_aggregate_micro_averages():
    docs = [field_scores(TRUTH, TRUTH), field_scores("garbage", TRUTH)]
    agg = aggregate_field_scores(docs)
    assert agg["documents"] == 2
    o = agg["overall"]
    assert (o["tp"], o["fn"]) == (N_FIELDS, N_FIELDS)
    assert o["precision"] == 1.0 and o["recall"] == pytest.approx(0.5)
    assert o["f1"] == pytest.approx(2 / 3) and o["accuracy"] == pytest.approx(0.5)
    assert agg["coverage"] == pytest.approx(0.5)
    assert agg["json_valid_rate"] == pytest.approx(0.5)
    assert agg["categories"]["employee"]["recall"] == pytest.approx(0.5)


def test_aggregate_empty():
    agg = aggregate_field_scores([])
    assert agg["overall"]["accuracy"] == 0.0 and agg["coverage"] == 0.0


# ------------------------------------------------------------ malformed predictions (issue 5 "Done when")

@pytest.mark.parametrize("text", [
    '{"employee": {"name": "Jane Doe", "ssn": "123-45',  # truncated bare JSON (cut by max tokens)
    '```json\n{"employee": {"name": "Jane Doe"}, "wages": 50000',  # truncated inside an open fence
    "{'employee': {'name': 'Jane Doe'}}",  # Python repr, not JSON
    '"just a string"',
    "",
])
def test_fields_truncated_or_non_json_predictions(text):
    s = field_scores(text, TRUTH)
    assert not s.json_valid
    assert (s.overall["tp"], s.overall["fp"], s.overall["fn"]) == (0, 0, N_FIELDS)


def test_fields_wrong_types():
    pred = _prediction(
        wages=[50000],  # a list where a number belongs: flattened to wages_0, so wages is missing and wages_0 extra
        employee={"name": 42, "ssn": True},  # number and bool where strings belong
        employer="Acme Corp",  # a string where an object belongs
    )
    s = field_scores(pred, TRUTH)
    st = {k: v["status"] for k, v in s.fields.items()}
    assert st["wages"] == "fn" and st["wages_0"] == "fp"
    assert st["employee_name"] == "fp" and st["employee_ssn"] == "fp"
    assert st["employer_name"] == "fn" and st["employer_ein"] == "fn" and st["employer"] == "fp"
    assert st["federalTax"] == "tp"
    assert s.json_valid and s.overall["tp"] == 3  # federalTax and the two multi-state fields


def test_fields_extra_keys_lower_precision_not_recall():
    s = field_scores(_prediction(bonus=1, notes={"a": "x", "b": "y"}), TRUTH)
    o = s.overall
    assert (o["tp"], o["fp"], o["fn"], o["n_extra"]) == (N_FIELDS, 3, 0, 3)
    assert o["recall"] == 1.0 and o["precision"] == pytest.approx(N_FIELDS / (N_FIELDS + 3))
    assert s.categories["notes"]["fp"] == 2
