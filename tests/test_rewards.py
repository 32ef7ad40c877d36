"""Tests of the reward callables: the release's definitions, robustness, the semantic reward and trl integration."""

from __future__ import annotations

import math
import re
import sys
import time
import timeit
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from videorft_hf import rewards
from videorft_hf.rewards import (
    DEFAULT_REWARD_FUNCS,
    REWARD_FUNCS,
    accuracy_reward,
    completion_text,
    extract_answer,
    format_reward,
    get_accuracy_reward,
    get_reward_funcs,
    get_semantic_consistency_reward,
    reasoning_span,
)
from videorft_hf.rewards.format import _is_well_formed
from videorft_hf.rewards.semantic import _gate, _Media, consistency_score
from videorft_hf.rewards.shaping import (
    correct_completions,
    group_length_bonus,
    group_temporal_bonus,
    shuffled_correct_counts,
)
from videorft_hf.testing import (
    build_tiny_siglip,
    make_index_frames,
    save_tiny_siglip,
    write_test_image,
    write_test_video,
)
from videorft_hf.video import VideoSamplingConfig, load_image, load_video_frames

PROBLEM_TYPES = ["multiple choice", "numerical", "OCR", "free-form", "regression"]


def conversational(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def accuracy(answer: str, solution: str, problem_type: str, **kwargs) -> float | None:
    return accuracy_reward([answer], solution=[solution], problem_type=[problem_type], **kwargs)[0]


# --------------------------------------------------------------------------------------------- the release's code
# The release's definitions, verbatim in behaviour, as oracles for the fast implementations.
RELEASE_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
RELEASE_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
RELEASE_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def release_extract_answer(text: str) -> str:
    match = RELEASE_ANSWER.search(text)
    return match.group(1).strip() if match else ""


def release_reasoning(content: str) -> str:
    match = RELEASE_THINK.search(content)
    if not match:
        return content
    s = match.group(1)
    return s[s.find(".") + 1 :].lstrip() if "." in s else s


def release_wer(reference: str, hypothesis: str) -> float:
    ref, hyp = reference.split(), hypothesis.split()
    d = [[0] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i in range(len(ref) + 1):
        d[i][0] = i
    for j in range(len(hyp) + 1):
        d[0][j] = j
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                d[i][j] = d[i - 1][j - 1]
            else:
                d[i][j] = 1 + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return d[len(ref)][len(hyp)] / max(1, len(ref))


def release_rouge(reference: str, hypothesis: str) -> float:
    from rouge_score import rouge_scorer

    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, hypothesis)
    return (scores["rouge1"].fmeasure + scores["rouge2"].fmeasure + scores["rougeL"].fmeasure) / 3


# Text made of the pieces that matter to the tag logic, including every kind of whitespace `\s` matches.
WHITESPACE = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000"]
TAG_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<", ">", "/", "a", ".", "x", "é", *WHITESPACE]
tag_text = st.lists(st.sampled_from(TAG_PIECES), max_size=24).map("".join)
# Near-misses and matches of the format: mostly `<think>` ... `</answer>` with tag soup in between.
shaped_text = st.builds(
    lambda head, body, tail: head + body + tail,
    st.sampled_from(["<think>", "<think>", "<think>", "", "x<think>", " <think>"]),
    st.lists(
        st.sampled_from([*TAG_PIECES, "</think>", "</think>", "<answer>", "<answer>", " ", "\n"]), max_size=16
    ).map("".join),
    st.sampled_from(["</answer>", "</answer>", "</answer>", "", "</answer>x", "</answer>\n"]),
)


def random_shaped_text(rng) -> str:
    pieces = [*TAG_PIECES, "</think>", "<answer>", "</think><answer>", "</think>\n<answer>", "</think> <answer>"]
    head = rng.choice(["<think>", "<think>", "<think>", "", "x<think>"])
    tail = rng.choice(["</answer>", "</answer>", "</answer>", "", "</answer>\n"])
    return head + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) + tail


NUMBER_TEXT = ["1e999999", str(10**400), "-" + str(10**400), "nan", "NaN", "inf", "-inf", "1_000", "0", "-0.0", "3.14"]
answer_text = st.one_of(st.text(max_size=30), st.sampled_from(NUMBER_TEXT), tag_text)
any_completion = st.one_of(
    st.text(max_size=200),
    tag_text,
    st.builds(lambda a, b: f"<think>{a}</think><answer>{b}</answer>", st.text(max_size=40), answer_text),
    st.builds(lambda a: f"<answer><answer>{a}</answer></answer>", answer_text),
)


# --------------------------------------------------------------------------------------------- text and tags
class TestTags:
    @settings(max_examples=600, deadline=None)
    @given(st.one_of(shaped_text, tag_text))
    def test_format_check_equals_release_fullmatch(self, text):
        assert _is_well_formed(text) == (RELEASE_FORMAT.fullmatch(text) is not None)

    def test_format_check_equivalence_sees_both_outcomes(self):
        # Seeded fuzzing alongside hypothesis, counting outcomes so that the equivalence is not checked on
        # non-matches only.
        import random

        rng = random.Random(0)
        outcomes = {True: 0, False: 0}
        for _ in range(4000):
            text = random_shaped_text(rng)
            expected = RELEASE_FORMAT.fullmatch(text) is not None
            assert _is_well_formed(text) == expected, text
            assert extract_answer(text) == release_extract_answer(text), text
            assert reasoning_span(text) == release_reasoning(text), text
            outcomes[expected] += 1
        assert min(outcomes.values()) > 400, outcomes

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(shaped_text, tag_text))
    def test_extract_answer_equals_release_regex(self, text):
        assert extract_answer(text) == release_extract_answer(text)

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(shaped_text, tag_text, st.text(max_size=40)))
    def test_reasoning_span_equals_release(self, text):
        assert reasoning_span(text) == release_reasoning(text)

    def test_reasoning_span_cases(self):
        assert reasoning_span("<think>Let me see. It is red. Yes</think><answer>A</answer>") == "It is red. Yes"
        assert reasoning_span("<think>no period here</think>") == "no period here"
        assert reasoning_span("no think block. at all") == "no think block. at all"
        assert reasoning_span("<think>first.</think>") == ""
        assert reasoning_span("<think>Hmm.  It is red. \n</think>") == "It is red. \n"  # only the left is stripped
        assert reasoning_span("<think> no period \n</think>") == " no period \n"

    def test_completion_text_forms(self):
        assert completion_text("plain") == "plain"
        assert completion_text(conversational("chat")) == "chat"
        blocks = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
        assert completion_text(blocks) == "ab"
        with_tool = [
            {"role": "assistant", "content": "calling"},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "final"},
        ]
        assert completion_text(with_tool) == "final"
        assert completion_text([]) == ""
        assert completion_text([{"role": "assistant", "content": None}]) == ""


# --------------------------------------------------------------------------------------------- format
class TestFormatReward:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("<think>a</think><answer>b</answer>", 1.0),
            ("<think>\nmulti\nline\n</think>\n\n<answer>\nB\n</answer>", 1.0),
            ("<think></think><answer></answer>", 1.0),
            ("<think>a</think> \u3000<answer>b</answer>", 1.0),  # unicode whitespace is `\s`
            ("<think>a</think>x<answer>b</answer>", 0.0),  # text between the blocks
            (" <think>a</think><answer>b</answer>", 0.0),  # text before
            ("<think>a</think><answer>b</answer>\n", 0.0),  # text after (even a newline)
            ("<think>a</think><answer>b</answer>extra", 0.0),
            ("<think>a</think>", 0.0),  # missing answer
            ("<answer>b</answer>", 0.0),  # missing think
            ("<think>a<answer>b</answer>", 0.0),  # unclosed think
            ("<think><think>a</think></think><answer>b</answer>", 1.0),  # nesting is just text inside .*?
            ("<think>a</think><answer>b</answer><answer>c</answer>", 1.0),
            ("", 0.0),
        ],
    )
    def test_cases(self, text, expected):
        assert format_reward([text]) == [expected]
        assert format_reward([conversational(text)]) == [expected]
        assert expected == (1.0 if RELEASE_FORMAT.fullmatch(text) else 0.0)

    def test_one_value_per_completion(self):
        completions = ["<think>a</think><answer>b</answer>", "nope", "<think></think><answer></answer>"]
        assert format_reward(completions, solution=["x"] * 3, trainer_state=None) == [1.0, 0.0, 1.0]


# --------------------------------------------------------------------------------------------- accuracy
class TestMultipleChoice:
    def test_exact_after_strip(self):
        assert accuracy("<think>x</think><answer> B </answer>", "<answer>B</answer>", "multiple choice") == 1.0
        assert accuracy("<answer>\nB\n</answer>", "<answer>  B</answer>", "multiple choice") == 1.0

    @pytest.mark.parametrize("answer", ["b", "(B)", "B.", "B. blue", "A", "BB", ""])
    def test_strict_by_default(self, answer):
        assert accuracy(f"<answer>{answer}</answer>", "<answer>B</answer>", "multiple choice") == 0.0

    def test_missing_answer_tags(self):
        assert accuracy("B", "<answer>B</answer>", "multiple choice") == 0.0
        assert accuracy("<answer>B", "<answer>B</answer>", "multiple choice") == 0.0

    def test_first_answer_counts(self):
        assert accuracy("<answer>A</answer><answer>B</answer>", "<answer>B</answer>", "multiple choice") == 0.0

    def test_solution_without_tags_is_used_whole(self):
        assert accuracy("<answer>B</answer>", "B", "multiple choice") == 1.0
        assert accuracy("no tags at all", "B", "multiple choice") == 0.0
        assert accuracy_reward(["<answer>3</answer>"], solution=[3], problem_type=["numerical"]) == [1.0]

    @pytest.mark.parametrize(
        ("answer", "expected"),
        [("B", 1.0), ("b", 1.0), ("(B)", 1.0), ("(b) blue", 1.0), ("B.", 1.0), ("B. blue", 1.0), ("B)", 1.0),
         ("B: blue", 1.0), ("A", 0.0), ("(A)", 0.0), ("Blue", 0.0), ("I think B", 0.0), ("", 0.0), ("B.blue", 0.0)],
    )  # fmt: skip
    def test_lenient(self, answer, expected):
        lenient = get_accuracy_reward(lenient_multiple_choice=True)
        assert lenient.__name__ == "accuracy_reward"
        value = lenient(
            [f"<answer>{answer}</answer>"], solution=["<answer>B</answer>"], problem_type=["multiple choice"]
        )
        assert value == [expected]
        # the solution may be written leniently too
        value = lenient(
            [f"<answer>{answer}</answer>"], solution=["<answer>B. blue</answer>"], problem_type=["multiple choice"]
        )
        assert value == [expected]


class TestNumerical:
    @pytest.mark.parametrize(
        ("answer", "solution", "expected"),
        [
            ("42", "42", 1.0),
            (" 42 ", "42", 1.0),
            ("3.14", "3.14", 1.0),
            ("3.141", "3.14", 1.0),  # equal after rounding to 2 decimals
            ("3.149", "3.14", 0.0),
            ("3.10", "3.1", 1.0),
            ("3", "3.0", 0.0),  # exactly one has a decimal point
            ("3.0", "3", 0.0),
            ("1,000", "1000", 0.0),  # exactly one has a comma
            ("1,000", "1,000", 1.0),
            ("1,000", "1000.0", 1.0),  # both "decimal": commas dropped, 1000 == 1000
            ("1,5", "1.5", 0.0),  # both "decimal", 15 != 1.5
            ("abc", "42", 0.0),  # unparseable
            ("", "42", 0.0),
            ("4 2", "42", 0.0),
            ("nan", "nan", 0.0),
            ("inf", "inf", 0.0),  # non-finite is unparseable here
            ("1e999999", "1e999999", 0.0),
            ("1_000", "1000", 1.0),  # Python's float() accepts underscores, as the release did
        ],
    )
    def test_cases(self, answer, solution, expected):
        assert accuracy(f"<answer>{answer}</answer>", f"<answer>{solution}</answer>", "numerical") == expected

    def test_missing_answer_tags(self):
        assert accuracy("42", "<answer>42</answer>", "numerical") == 0.0


class TestRegression:
    def test_exact_is_almost_one(self):
        assert accuracy("<answer>10</answer>", "<answer>10</answer>", "regression") == pytest.approx(1.0, abs=1e-9)
        assert accuracy("<answer>0</answer>", "<answer>0</answer>", "regression") == 0.0  # (0+1e-9)/(0+1e-9) = 1

    @pytest.mark.parametrize(
        ("answer", "solution", "expected"),
        [("5", "10", 0.5), ("15", "10", 0.5), ("7.5", "10", 0.75), ("30", "10", 0.0), ("-10", "10", 0.0)],
    )
    def test_relative_error(self, answer, solution, expected):
        value = accuracy(f"<answer>{answer}</answer>", f"<answer>{solution}</answer>", "regression")
        release = 1 - min(1.0, max(0.0, (abs(float(answer) - float(solution)) + 1e-9) / (abs(float(solution)) + 1e-9)))
        assert value == release
        assert value == pytest.approx(expected, abs=1e-9)

    @pytest.mark.parametrize("answer", ["abc", "", "nan", "inf", "1e999", "-1e999"])
    def test_unparseable_or_non_finite(self, answer):
        assert accuracy(f"<answer>{answer}</answer>", "<answer>10</answer>", "regression") == 0.0

    def test_overflowing_difference(self):
        assert accuracy("<answer>1.7e308</answer>", "<answer>-1.7e308</answer>", "regression") == 0.0


class TestOCR:
    @pytest.mark.parametrize(
        ("answer", "solution"),
        [
            ("STOP", "STOP"),
            ("the quick brown fox", "the quick brown fox"),
            ("the quick brown", "the quick brown fox"),
            ("the slow brown fox", "the quick brown fox"),
            ("fox brown quick the", "the quick brown fox"),
            ("a b c d e f g h", "a"),  # WER above 1 clips to 0
            ("", "some words"),
            ("anything", ""),  # no reference words: distance / 1
        ],
    )
    def test_one_minus_wer(self, answer, solution):
        value = accuracy(f"<answer>{answer}</answer>", f"<answer>{solution}</answer>", "OCR")
        assert value == max(0.0, min(1.0, 1 - release_wer(solution, answer)))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(["a", "b", "c", "A", "é", "1"]), max_size=12).map(" ".join),
           st.lists(st.sampled_from(["a", "b", "c", "A", "é", "1"]), max_size=12).map(" ".join))  # fmt: skip
    def test_wer_equals_release_dynamic_programme(self, reference, hypothesis):
        assert rewards.word_error_rate(reference, hypothesis) == release_wer(reference, hypothesis)


class TestFreeForm:
    @pytest.mark.parametrize(
        ("answer", "solution"),
        [
            ("The cats are running.", "the cat runs"),
            ("a red car", "a red car"),
            ("completely different", "nothing alike"),
            ("", "something"),
            ("something", ""),
            ("!!!", "???"),
        ],
    )
    def test_equals_rouge_score(self, answer, solution):
        value = accuracy(f"<answer>{answer}</answer>", f"<answer>{solution}</answer>", "free-form")
        assert value == max(0.0, min(1.0, release_rouge(solution, answer)))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(st.sampled_from(["cat", "cats", "running", "runs", "The", "a", "a", "!", "généralement", "3"]), max_size=15),
        st.lists(st.sampled_from(["cat", "cats", "running", "runs", "The", "a", "a", "!", "généralement", "3"]), max_size=15),
    )  # fmt: skip
    def test_rouge_equals_rouge_score_exactly(self, reference, hypothesis):
        reference, hypothesis = " ".join(reference), " ".join(hypothesis)
        assert rewards.rouge_mean_fmeasure(reference, hypothesis) == release_rouge(reference, hypothesis)


class TestAccuracyBatch:
    def test_each_row_uses_its_own_problem_type(self):
        completions = [
            conversational(f"<think>.</think><answer>{a}</answer>") for a in ["B", "3.0", "x y", "red car", "8"]
        ]
        solutions = [f"<answer>{s}</answer>" for s in ["B", "3.0", "x z", "a red car", "10"]]
        values = accuracy_reward(completions, solution=solutions, problem_type=PROBLEM_TYPES)
        assert values[:2] == [1.0, 1.0]
        assert values[2] == 0.5
        assert values[3] == release_rouge("a red car", "red car")
        assert values[4] == pytest.approx(0.8)

    def test_unknown_problem_type_is_none_and_logged(self):
        logged = []
        values = accuracy_reward(
            ["<answer>B</answer>", "<answer>B</answer>", "<answer>1</answer>", "<answer>1</answer>"],
            solution=["<answer>B</answer>", "<answer>B</answer>", "<answer>1</answer>", None],
            problem_type=["multiple choice", "essay", "numerical", "numerical"],
            log_metric=lambda name, value: logged.append((name, value)),
        )
        assert values == [1.0, None, 1.0, None]
        by_name = {}
        for name, value in logged:
            by_name.setdefault(name, []).append(value)
        assert by_name["rewards/accuracy_reward/multiple_choice/mean"] == [1.0]
        assert by_name["rewards/accuracy_reward/numerical/mean"] == [1.0]
        assert by_name["rewards/accuracy_reward/unknown_problem_type_frac"] == [0.0, 1.0, 0.0, 1.0]
        assert not any("essay" in name for name in by_name)

    def test_works_without_log_metric(self):
        assert accuracy_reward(["<answer>B</answer>"], solution=["<answer>B</answer>"], problem_type=["essay"]) == [
            None
        ]

    def test_column_length_mismatch_is_a_clear_error(self):
        with pytest.raises(ValueError, match="one value per completion"):
            accuracy_reward(["a", "b"], solution=["<answer>a</answer>"], problem_type=["OCR", "OCR"])


# --------------------------------------------------------------------------------------------- robustness
class TestRobustness:
    @settings(max_examples=400, deadline=None)
    @given(any_completion, st.one_of(answer_text, tag_text), st.sampled_from([*PROBLEM_TYPES, "unknown"]))
    def test_no_completion_makes_a_reward_raise(self, completion, solution, problem_type):
        for lenient in (False, True):
            reward = get_accuracy_reward(lenient_multiple_choice=lenient)
            for value in reward([completion], solution=[f"<answer>{solution}</answer>"], problem_type=[problem_type]):
                assert value is None or (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0)
        assert format_reward([completion]) in ([0.0], [1.0])

    @pytest.mark.parametrize("number", ["1e999999", str(10**400), "-" + str(10**400), "nan", "inf", "-inf", "1e-999"])
    @pytest.mark.parametrize("side", ["answer", "solution", "both"])
    def test_huge_and_non_finite_numbers(self, number, side):
        answer = number if side in ("answer", "both") else "5"
        solution = number if side in ("solution", "both") else "5"
        for problem_type in PROBLEM_TYPES:
            value = accuracy(f"<answer>{answer}</answer>", f"<answer>{solution}</answer>", problem_type)
            assert isinstance(value, float) and 0.0 <= value <= 1.0

    def test_megabyte_adversarial_completions_in_bounded_time(self):
        megabyte = 1_000_000
        rng = np.random.default_rng(0)
        words = " ".join("".join(chr(c) for c in rng.integers(97, 123, size=7)) for _ in range(megabyte // 8))
        adversarial = [
            "<think>" + "</think><answer>" * (megabyte // 16) + "x",  # quadratic for the format regex
            "<think>" + ("x" + " " * 100 + "<answer>") * (megabyte // 109) + "</answer>",  # long backward walks
            "<think>" + "</think>x<answer>" * (megabyte // 17) + "</answer>",
            "<answer>" + " " * megabyte,  # cubic for the release's answer regex
            "<answer>" * (megabyte // 8),
            "<think>" * (megabyte // 7),
            "<think>x</think><answer>" + words + "</answer>",  # a megabyte of distinct words to tokenize and stem
            "<think>x</think><answer>" + "1" * megabyte + "</answer>",
            "<think>x</think><answer>" + ". " * (megabyte // 2) + "</answer>",
        ]
        solution = "<answer>the cat sat on the mat 1.5</answer>"
        for completion in adversarial:
            assert len(completion) >= megabyte * 0.9
            start = time.perf_counter()
            assert format_reward([completion]) in ([0.0], [1.0])
            values = accuracy_reward([completion] * 5, solution=[solution] * 5, problem_type=PROBLEM_TYPES)
            elapsed = time.perf_counter() - start
            assert all(0.0 <= v <= 1.0 for v in values)
            # generous: the slowest case (distinct words, stemmed for ROUGE) takes about 1.5 s on one core
            assert elapsed < 5.0, (completion[:40], elapsed)

    @pytest.mark.parametrize(
        "make_text",
        [
            lambda n: "<think>" + "</think><answer>" * n + "x",  # the release's regex: quadratic (16x for 4x)
            lambda n: "<think>" + ("x" + " " * 100 + "<answer>") * n + "</answer>",  # long whitespace walks
            lambda n: "<think>" + "</think>x<answer>" * n + "</answer>",  # many </think> ... <answer> pairs
        ],
        ids=["release-regex-worst-case", "whitespace-walks", "pairs"],
    )
    def test_format_reward_time_grows_at_most_linearly(self, make_text):
        """`format_reward` itself, timed at n and 4n units (each timing long enough to measure): linear is ~4x."""

        def per_call(n: int) -> float:
            text = make_text(n)
            assert format_reward([text]) in ([0.0], [1.0])
            timer = timeit.Timer(lambda: format_reward([text]))
            number, total = timer.autorange()
            return min(total, *timer.repeat(repeat=2, number=number)) / number

        small, large = per_call(4_000), per_call(16_000)
        assert large < 8 * small, (small, large)


# --------------------------------------------------------------------------------------------- semantic consistency
@pytest.fixture(scope="module")
def tiny_siglip():
    return build_tiny_siglip(seed=0)


def independent_semantic(model, processor, text: str, frames: list, weight: float = 2.0) -> float:
    """The formula, computed directly: SigLIP embeddings of the 64-token text and each frame, torch cosine."""
    tokens = processor.tokenizer([text], padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    pixels = processor.image_processor(images=[Image.fromarray(np.asarray(f)) for f in frames], return_tensors="pt")
    with torch.no_grad():
        t = model.get_text_features(**tokens).pooler_output
        v = model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output
    cos = torch.nn.functional.cosine_similarity(v, t.expand_as(v), dim=-1)
    return float(torch.clamp(weight * torch.clamp(cos, min=0.0), max=1.0).mean())


def vision_counter(model):
    calls = []
    handle = model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs.get("pixel_values", args[0] if args else None).clone()),
        with_kwargs=True,
    )
    return calls, handle


COMPLETIONS = [
    "<think>Let me look. A red block sits on the left.</think><answer>B</answer>",
    "<think>Hmm. White squares flicker in the grid, counting up.</think><answer>B</answer>",
    "<think>I see. Blue corner, green corner.</think><answer>A</answer>",
    "no think block at all, just text",
]


class TestSemanticConsistency:
    def test_equals_independent_computation_on_passed_frames(self, tiny_siglip):
        model, processor = tiny_siglip
        video = make_index_frames(6, 40, 56)
        image = Image.fromarray(make_index_frames(1, 48, 48, start=77)[0])
        reward = get_semantic_consistency_reward(model=model, processor=processor, weight=2.0, gate_on_accuracy=False)
        completions = [conversational(c) for c in COMPLETIONS]
        frames = [video, video, image, torch.from_numpy(video)]
        values = reward(completions, frames=frames)
        expected = [
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[0]), list(video)),
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[1]), list(video)),
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[2]), [np.asarray(image)]),
            independent_semantic(model, processor, COMPLETIONS[3], list(video)),
        ]
        assert values == pytest.approx(expected, abs=1e-5)
        assert all(0.0 <= v <= 1.0 for v in values)
        assert len(set(np.round(values, 6))) > 1  # a test that could not fail on a constant

    def test_weight_and_clipping(self, tiny_siglip):
        model, processor = tiny_siglip
        video = make_index_frames(4, 32, 32)
        for weight in (0.0, 0.5, 50.0):
            reward = get_semantic_consistency_reward(
                model=model, processor=processor, weight=weight, gate_on_accuracy=False
            )
            value = reward([COMPLETIONS[0]], frames=[video])[0]
            assert value == pytest.approx(
                independent_semantic(model, processor, reasoning_span(COMPLETIONS[0]), list(video), weight), abs=1e-5
            )
        with pytest.raises(ValueError, match="weight"):
            get_semantic_consistency_reward(weight=float("nan"))

    def test_gate_on_accuracy(self, tiny_siglip):
        model, processor = tiny_siglip
        video = make_index_frames(4, 32, 32)
        completions = COMPLETIONS[:3]
        kwargs = dict(frames=[video] * 3, solution=["<answer>B</answer>"] * 3, problem_type=["multiple choice"] * 3)
        ungated = get_semantic_consistency_reward(model=model, processor=processor, gate_on_accuracy=False)(
            completions, **kwargs
        )
        gated = get_semantic_consistency_reward(model=model, processor=processor)(completions, **kwargs)
        assert gated[:2] == pytest.approx(ungated[:2]) and ungated[2] > 0
        assert gated[2] == 0.0  # answered A, solution B
        unknown = get_semantic_consistency_reward(model=model, processor=processor)(
            completions[:1], frames=[video], solution=["<answer>B</answer>"], problem_type=["essay"]
        )
        assert unknown == [None]
        with pytest.raises(ValueError, match="gate_on_accuracy=False"):
            get_semantic_consistency_reward(model=model, processor=processor)(completions, frames=[video] * 3)

    def test_rows_without_media_get_none(self, tiny_siglip):
        model, processor = tiny_siglip
        reward = get_semantic_consistency_reward(model=model, processor=processor, gate_on_accuracy=False)
        assert reward(COMPLETIONS[:2]) == [None, None]
        assert reward(COMPLETIONS[:2], frames=[None, None], video=[None, None], image=[None, None]) == [None, None]

    def test_frames_encoded_once_per_video_and_texts_batched(self, tiny_siglip):
        model, processor = tiny_siglip
        reward = get_semantic_consistency_reward(model=model, processor=processor, gate_on_accuracy=False)
        video_a, video_b = make_index_frames(6, 32, 32), make_index_frames(6, 32, 32, start=100)
        texts_seen = []
        text_handle = model.text_model.register_forward_pre_hook(
            lambda module, args, kwargs: texts_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
        )
        calls, handle = vision_counter(model)
        try:
            values = reward(COMPLETIONS * 4, frames=[video_a] * 8 + [video_b] * 8)
        finally:
            handle.remove()
            text_handle.remove()
        assert [c.shape[0] for c in calls] == [6, 6]  # one pass per distinct video, all its frames at once
        assert texts_seen == [len(COMPLETIONS)]  # distinct texts in one batch
        assert values[:4] == values[4:8] and values[8:12] == values[12:]

    def test_colours_are_not_wrapped(self, tiny_siglip):
        model, processor = tiny_siglip
        white = np.full((2, 40, 40, 3), 255, dtype=np.uint8)
        saturated = np.zeros((2, 40, 40, 3), dtype=np.uint8)
        saturated[..., 0] = 255
        saturated[:, :, :20, 2] = 200
        reward = get_semantic_consistency_reward(model=model, processor=processor, gate_on_accuracy=False)
        calls, handle = vision_counter(model)
        try:
            reward(COMPLETIONS[:2], frames=[white, saturated])
        finally:
            handle.remove()
        for seen, frames in zip(calls, (white, saturated), strict=True):
            from_pil = processor.image_processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt")
            assert torch.equal(seen, from_pil["pixel_values"])
        assert torch.all(calls[0] == 1.0)  # white stays white (the release's float path wrapped 255 to 1)
        # the release: ToPILImage on 0-255 floats multiplies by 255 and wraps in uint8
        from torchvision.transforms import ToPILImage

        wrapped = np.asarray(ToPILImage()(torch.from_numpy(white[0]).permute(2, 0, 1).float()))
        assert wrapped.max() == 1

    def test_decodes_video_and_image_columns_when_no_frames(self, tiny_siglip, tmp_path):
        model, processor = tiny_siglip
        video_path = write_test_video(tmp_path / "clips" / "a.mp4", num_frames=24, fps=8.0, width=64, height=48)
        image_path = write_test_image(tmp_path / "images" / "b.png", width=40, height=30, index=5)
        config = VideoSamplingConfig.from_preset(
            "videorft-train", min_frames=4, max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56
        )
        reward = get_semantic_consistency_reward(
            model=model, processor=processor, gate_on_accuracy=False, media_root=tmp_path, sampling_config=config
        )
        calls, handle = vision_counter(model)
        try:
            values = reward(
                COMPLETIONS,
                video=["./clips/a.mp4", "./clips/a.mp4", None, str(video_path)],
                image=[None, None, "./images/b.png", None],
            )
        finally:
            handle.remove()
        frames, _ = load_video_frames(video_path, config)
        image = load_image(image_path, config)
        expected = [
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[0]), list(frames)),
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[1]), list(frames)),
            independent_semantic(model, processor, reasoning_span(COMPLETIONS[2]), [np.asarray(image)]),
            independent_semantic(model, processor, COMPLETIONS[3], list(frames)),
        ]
        assert values == pytest.approx(expected, abs=1e-5)
        # one decode and one encoder pass per distinct file, however its path is spelled
        assert [c.shape[0] for c in calls] == [4, 1]

    def test_bad_frames_are_typed_errors(self, tiny_siglip):
        model, processor = tiny_siglip
        reward = get_semantic_consistency_reward(model=model, processor=processor, gate_on_accuracy=False)
        with pytest.raises(TypeError, match="uint8"):
            reward(COMPLETIONS[:1], frames=[np.zeros((2, 8, 8, 3), dtype=np.float32)])
        with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
            reward(COMPLETIONS[:1], frames=[np.zeros((2, 3, 8, 8), dtype=np.uint8)])

    def test_loads_lazily_from_a_path(self, tmp_path):
        path = save_tiny_siglip(tmp_path / "siglip")
        reward = get_semantic_consistency_reward(str(path), gate_on_accuracy=False, device="cpu")
        assert not reward.encoder.loaded
        value = reward(COMPLETIONS[:1], frames=[make_index_frames(2, 32, 32)])
        assert reward.encoder.loaded and reward.encoder.model.dtype == torch.float32
        assert 0.0 <= value[0] <= 1.0

    def test_a_misspelled_model_fails_when_built_not_at_the_first_correct_answer(self, tmp_path):
        from videorft_hf.rewards import RewardModelError

        with pytest.raises(RewardModelError, match=r"'tiny-siglp' cannot be loaded: .*--semantic_model_name_or_path"):
            get_semantic_consistency_reward("tiny-siglp")  # offline (conftest): neither cached nor reachable
        with pytest.raises(RewardModelError, match=r"'/nonexistent/model' cannot be loaded: no such folder"):
            get_semantic_consistency_reward("/nonexistent/model")
        (tmp_path / "empty").mkdir()
        with pytest.raises(RewardModelError, match="has no config.json"):
            get_semantic_consistency_reward(str(tmp_path / "empty"))
        unresolved = get_semantic_consistency_reward("tiny-siglp", resolve=False)  # as the registry builds it
        with pytest.raises(RewardModelError, match="'tiny-siglp' cannot be loaded"):
            unresolved.encoder.load()  # what VideoGRPOTrainer calls before the first step


# --------------------------------------------------------------------------------------------- registry
def script_args(**values) -> SimpleNamespace:
    """What `get_reward_funcs` reads of `VideoRFTScriptArguments`."""
    return SimpleNamespace(**{"reward_funcs": None, "semantic_model_name_or_path": "unused", **values})


class TestRegistry:
    def test_keys_are_function_names(self, tmp_path):
        args = script_args(semantic_model_name_or_path=str(save_tiny_siglip(tmp_path / "siglip")))
        assert set(REWARD_FUNCS) == {"format_reward", "accuracy_reward", "semantic_consistency_reward"}
        for name, build in REWARD_FUNCS.items():
            assert build(args).__name__ == name
        assert not REWARD_FUNCS["semantic_consistency_reward"](args).encoder.loaded

    def test_get_reward_funcs(self, tmp_path, monkeypatch):
        assert get_reward_funcs(script_args(reward_funcs=["format_reward"])) == [format_reward]
        assert get_reward_funcs(
            script_args(reward_funcs=["accuracy_reward", "videorft_hf.rewards.format_reward"])
        ) == [
            accuracy_reward,
            format_reward,
        ]
        (tmp_path / "my_rewards_mod.py").write_text(
            "def my_reward(completions, **kwargs):\n    return [0.5] * len(completions)\n"
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        [custom] = get_reward_funcs(script_args(reward_funcs=["my_rewards_mod.my_reward"]))
        assert custom(["a"]) == [0.5]
        for bad in ["nope", "my_rewards_mod.missing", "no_such_module.f"]:
            with pytest.raises(ValueError, match="Could not load reward function"):
                get_reward_funcs(script_args(reward_funcs=[bad]))

    def test_the_semantic_reward_is_built_from_the_script_arguments(self, tmp_path):
        from videorft_hf.configs import VideoRFTScriptArguments
        from videorft_hf.rewards import RewardModelError

        path = str(save_tiny_siglip(tmp_path / "siglip"))
        args = VideoRFTScriptArguments(semantic_model_name_or_path=path)  # reward_funcs unset: the paper's three
        funcs = get_reward_funcs(args)
        assert [f.__name__ for f in funcs] == list(DEFAULT_REWARD_FUNCS) == [
            "format_reward", "accuracy_reward", "semantic_consistency_reward"
        ]  # fmt: skip
        assert funcs[2].encoder.model_name_or_path == path and not funcs[2].encoder.loaded
        assert get_reward_funcs(args)[2] is not funcs[2]  # built per call, never shared through the registry
        with pytest.raises(RewardModelError, match="'tiny-siglp' cannot be loaded"):
            get_reward_funcs(
                script_args(reward_funcs=["semantic_consistency_reward"], semantic_model_name_or_path="tiny-siglp")
            )

    def test_importing_the_rewards_builds_nothing(self, monkeypatch):
        """A fresh import of the package constructs no encoder and asks no loader for a model."""
        import gc
        import importlib

        import transformers
        import transformers.utils

        import videorft_hf

        asked = []
        monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: asked.append(a))
        monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: asked.append(a))
        monkeypatch.setattr(transformers.utils, "cached_file", lambda *a, **k: asked.append(a))
        for name in [n for n in sys.modules if n == "videorft_hf.rewards" or n.startswith("videorft_hf.rewards.")]:
            monkeypatch.delitem(sys.modules, name)  # restored after the test, with the package attribute
        monkeypatch.setattr(videorft_hf, "rewards", rewards)
        fresh = importlib.import_module("videorft_hf.rewards")
        assert fresh is not rewards and hasattr(fresh, "REWARD_FUNCS")
        encoders = [obj for obj in gc.get_objects() if isinstance(obj, fresh.semantic._SemanticEncoder)]
        assert encoders == [] and asked == []


# --------------------------------------------------------------------------------------------- trl
def test_rewards_run_inside_stock_grpo_trainer(tmp_path, tiny_siglip):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from videorft_hf.testing import build_tiny_text_lm

    model, tokenizer = build_tiny_text_lm(seed=0)
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "Pick one."}], "solution": "<answer>B</answer>", "problem_type": "multiple choice"},
            {"prompt": [{"role": "user", "content": "How many?"}], "solution": "<answer>3</answer>", "problem_type": "numerical"},
        ]
    )  # fmt: skip
    siglip, siglip_processor = tiny_siglip
    semantic = get_semantic_consistency_reward(model=siglip, processor=siglip_processor)
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_completion_length=8, max_steps=1,
        report_to=[], use_cpu=True, logging_steps=1, save_strategy="no", beta=0.0, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[format_reward, accuracy_reward, semantic],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {
        "rewards/format_reward/mean",
        "rewards/accuracy_reward/mean",
        "rewards/semantic_consistency_reward/mean",
    } <= logged
    assert logged & {"rewards/accuracy_reward/multiple_choice/mean", "rewards/accuracy_reward/numerical/mean"}
    assert "rewards/accuracy_reward/unknown_problem_type_frac" in logged


# --------------------------------------------------------------------------------------------- semantic steps
def test_semantic_gate_decides_which_rows_are_scored():
    video, image = _Media("video", "/v.mp4", 0), _Media("image", "/i.png", 1)
    media = [video, image, None, video, image]
    # the gate off: every row with media is scored
    assert _gate(media, None) == ([None] * 5, [0, 1, 3, 4])
    # on: accuracy <= 0 gives 0.0 (as released), an unknown accuracy None, a text row None whatever its accuracy
    assert _gate(media, [1.0, 0.0, 1.0, None, 0.25]) == ([None, 0.0, None, None, None], [0, 4])
    # passed frames are one media per array object, files one per path
    frames = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    assert _Media("frames", frames, 0).key == _Media("frames", frames, 3).key != _Media("frames", frames.copy(), 0).key
    assert _Media("video", "/v.mp4", 0).key == _Media("video", "/v.mp4", 2).key != _Media("image", "/v.mp4", 0).key


def test_consistency_score_clips_each_frame_then_averages():
    frames = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([0.6, 0.8])
    # cosines 0.6, 0.8, -0.6: negative ones count 0; w = 1 -> mean(0.6, 0.8, 0); w = 2 -> mean(1, 1, 0), clipped at 1
    assert consistency_score(frames, text, 1.0) == pytest.approx((0.6 + 0.8) / 3)
    assert consistency_score(frames, text, 2.0) == pytest.approx(2 / 3)
    assert consistency_score(frames, text, 0.0) == 0.0


# --------------------------------------------------------------------------------------------- group shaping
class TestShaping:
    def test_correct_completions_never_counts_an_unscored_one(self):
        accuracy = torch.tensor([0.1, 0.11, torch.nan, 1.0])
        assert correct_completions(accuracy, 0.1).tolist() == [False, True, False, True]
        assert correct_completions(accuracy, 0.5).tolist() == [False, False, False, True]

    def test_length_bonus_needs_several_correct_in_the_group_and_a_length_in_range(self):
        correct = torch.tensor([True, True, True, False, True, False, True, True])
        lengths = torch.tensor([320, 512, 600, 400, 400, 400, 319, 513])
        groups = torch.arange(8) // 4
        bonus = group_length_bonus(correct, lengths, groups, min_tokens=320, max_tokens=512, value=0.2)
        # group 1: three correct, the 600-token one out of range; group 2: three correct, 319 and 513 out of range
        assert bonus.tolist() == pytest.approx([0.2, 0.2, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0])
        lone = group_length_bonus(torch.tensor([True, False]), torch.tensor([400, 400]), torch.tensor([0, 0]), 320, 512, 0.2)
        assert lone.tolist() == [0.0, 0.0]  # one correct completion alone earns nothing

    def test_temporal_bonus_compares_ordered_and_shuffled_rates(self):
        correct = torch.tensor([True, True, False, True, True, True, True, True])
        # groups of 2: shuffled (correct, rolled out) credited to the first row of each group
        counts = torch.tensor(
            [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
        )
        bonus, shuffled_accuracy = group_temporal_bonus(correct, counts, torch.arange(8) // 2, ratio=0.8, value=0.3)
        # p = 1 >= 0.8 * 1; p = 0.5 < 0.8 * 1; p = 1 >= 0.8 * 0.5; no shuffled rollout: nothing, and p~ unknown
        assert bonus.tolist() == pytest.approx([0.3, 0.3, 0.0, 0.0, 0.3, 0.3, 0.0, 0.0])
        assert shuffled_accuracy[:3].tolist() == [1.0, 1.0, 0.5] and math.isnan(shuffled_accuracy[3])

    def test_groups_are_ids_not_blocks(self):
        """The rows of a group need not be adjacent (trl shuffles them), and two groups stay apart even when their
        completions come in one block: the bonuses follow the group ids."""
        correct = torch.tensor([True, True, False, True, True, False, True, True])
        lengths = torch.tensor([400] * 8)
        groups = torch.tensor([7, 3, 7, 3, 7, 3, 7, 3])  # two interleaved groups of four
        bonus = group_length_bonus(correct, lengths, groups, min_tokens=320, max_tokens=512, value=0.2)
        # group 7 (rows 0, 2, 4, 6): three correct; group 3 (rows 1, 3, 5, 7): three correct
        assert bonus.tolist() == pytest.approx([0.2, 0.2, 0.0, 0.2, 0.2, 0.0, 0.2, 0.2])
        lone_pairs = group_length_bonus(torch.tensor([True, False, True, False]), torch.tensor([400] * 4),
                                        torch.tensor([0, 0, 1, 1]), 320, 512, 0.2)
        assert lone_pairs.tolist() == [0.0] * 4  # as two groups of two, each has one correct completion
        # shuffled rollouts credited to group 3's row 1 only: group 7 has none and earns nothing
        counts = torch.zeros(8, 2)
        counts[1] = torch.tensor([0.0, 2.0])
        temporal, shuffled_accuracy = group_temporal_bonus(correct, counts, groups, ratio=0.8, value=0.3)
        assert temporal.tolist() == pytest.approx([0.0, 0.3, 0.0, 0.3, 0.0, 0.0, 0.0, 0.3])
        assert shuffled_accuracy[0].item() == 0.0 and math.isnan(shuffled_accuracy[1])  # groups 3, 7 in id order

    def test_shuffled_counts_use_the_threshold_they_are_given(self):
        scores, owners = [0.3, 0.05, None, 1.0], [0, 0, 2, 2]
        assert shuffled_correct_counts(scores, owners, 3, threshold=0.1).tolist() == [[1, 2], [0, 0], [1, 2]]
        assert shuffled_correct_counts(scores, owners, 3, threshold=0.5).tolist() == [[0, 2], [0, 0], [1, 2]]
