"""VideoRFT-mini: a synthetic video-reasoning dataset of real H.264 clips whose answers depend on the frames.

Each clip shows large, solid, saturated shapes (red, green, blue, yellow) on a dark background. Questions cover the
five problem types of the release, and every answer is read off the frames:

| kind | data type | problem type | question (answer) |
|---|---|---|---|
| `colour` | video | multiple choice | what colour is the shape (4 options) |
| `position` | video | multiple choice | which quadrant holds the shape (4 options) |
| `direction` | video | multiple choice | which way the shape moves (left, right, up, down) |
| `order` | video | multiple choice | which colour appears first (a shape in the first half, another in the second) |
| `motion` | video | multiple choice | does the shape move (yes, no) |
| `image_colour`, `image_position` | image | multiple choice | as above, on a still image |
| `count`, `image_count` | video / image | numerical | how many shapes (1 to 3) |
| `regression` | video | regression | the shape's centre in percent of the width (20 to 80) |
| `ocr` | video | OCR | a 1-3 letter word drawn with PIL's default font |
| `describe` | video | free-form | "a red circle moves left" |

Options are listed in a fixed order per kind (so the answer letter is a function of the frames alone, which a model
trained from scratch on a few hundred samples can learn) unless `shuffle_options=True`; answer letters are balanced
within each kind. The CoT `process` is short, as a byte-level tokenizer spends one token per character, and holds two
sentences, so the semantic-consistency reward (which reads the text after the first ".") sees the visual statement:
`<think>Let me see. The shape is red, so A.</think>` then `<answer>A</answer>`.

Defaults suit the tiny-model demo: 56x56 clips of 8 frames at 4 fps (2 s). With the `video-r1-train` preset and
`video_min_pixels = video_max_pixels = 56 * 56` a clip is sampled to 4 frames (indices 0, 2, 5, 7) of 56x56, i.e.
2 temporal patches of 2x2 merged tokens; each quadrant of a frame is exactly one merged token.

Output folder (`generate_mini` returns these paths):

    videos/mini_000000.mp4 ...    real H.264 (PyAV, libx264, yuv420p), byte-reproducible for a given seed
    images/mini_000150.png ...    the image share (the RL set mixes video and image rows)
    cot.jsonl                     CoT split (SFT): records with `process`
    rl.jsonl                      RL split: records without `process`, other clips than the CoT split
    eval.jsonl                    held-out evaluation split (Video-R1-eval schema, for `videorft eval`)
    hub/VideoRFT-mini-CoT/        the CoT split built by `dataset_builder.build_dataset` (parquet + README configs)
    hub/VideoRFT-mini-RL/         the RL split, likewise

Every path in the records is relative to the output folder (`./videos/...`), so pass it as `media_root`.

    python -m videorft_hf.mini out/mini --num-train 200 --num-eval 60

Example:
    >>> from videorft_hf import load_videorft_dataset
    >>> from videorft_hf.mini import generate_mini
    >>> paths = generate_mini("out/mini", num_train=40, num_eval=12, seed=0)  # doctest: +SKIP
    >>> sft = load_videorft_dataset(paths["cot_dataset"], media_root=paths["root"])  # doctest: +SKIP
    >>> sft[0]["completion"][0]["content"][0]["text"]  # doctest: +SKIP
    '<think>Let me see. The shape is blue, so C.</think>\\n<answer>C</answer>'
"""

from __future__ import annotations

import argparse
import json
import os
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .jsonl import write_jsonl
from .media_encoding import write_frames_mp4

__all__ = [
    "PALETTE",
    "BACKGROUND",
    "DEFAULT_MIX",
    "KINDS",
    "generate_mini",
    "multiple_choice_chance",
    "nearest_colour",
    "main",
]

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 235),
    "yellow": (235, 215, 40),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (24, 24, 24)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
WORDS: tuple[str, ...] = ("A", "GO", "HI", "OK", "UP", "CAT", "DOG", "SUN", "BOX", "RED")
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
LETTERS = string.ascii_uppercase

# kind -> (data_type, problem_type)
KINDS: dict[str, tuple[str, str]] = {
    "colour": ("video", "multiple choice"),
    "position": ("video", "multiple choice"),
    "direction": ("video", "multiple choice"),
    "order": ("video", "multiple choice"),
    "motion": ("video", "multiple choice"),
    "image_colour": ("image", "multiple choice"),
    "image_position": ("image", "multiple choice"),
    "count": ("video", "numerical"),
    "image_count": ("image", "numerical"),
    "regression": ("video", "regression"),
    "ocr": ("video", "OCR"),
    "describe": ("video", "free-form"),
}
# Share of each kind (relative weights): 65% multiple choice, 11% images.
DEFAULT_MIX: dict[str, float] = {
    "colour": 16,
    "position": 12,
    "direction": 12,
    "order": 8,
    "motion": 6,
    "image_colour": 6,
    "image_position": 5,
    "count": 7,
    "image_count": 3,
    "regression": 7,
    "ocr": 8,
    "describe": 10,
}
_SPLIT_IDS = {"cot": 1, "rl": 2, "eval": 3}
_CARD = """# $pretty_name

VideoRFT-mini, a synthetic video-reasoning set written by `videorft_hf.mini.generate_mini`: real H.264 clips of moving,
coloured shapes with questions of all five problem types whose answers depend on the frames. $num_rows records
($num_read read, $num_rejected rejected).

## Load

$load_example

## Composition

$stats
"""


@dataclass
class _Sprite:
    colour: str
    shape: str
    radius: int
    centres: list[tuple[float, float] | None]  # per frame; None: not shown in that frame


@dataclass
class _Item:
    kind: str
    problem: str
    options: list[str]
    answer: str  # the text inside <answer></answer>
    thought: str  # the sentence after "Let me see."
    sprites: list[_Sprite] = field(default_factory=list)
    word: str | None = None


def nearest_colour(rgb: Sequence[float]) -> str:
    """Name of the palette colour closest to an RGB triple (for checking answers against decoded pixels).

    Example:
        >>> nearest_colour((200, 60, 50))
        'red'
    """
    rgb = np.asarray(rgb, dtype=float)
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(PALETTE[name], dtype=float) - rgb) ** 2)))


def multiple_choice_chance(records: str | os.PathLike | Sequence[Mapping[str, Any]]) -> float:
    """Accuracy of guessing uniformly among the options, averaged over the multiple-choice records.

    The learning target "accuracy >= 2x chance" must use this value: the kinds have 2 or 4 options.

    Args:
        records: a JSONL file of records (such as `eval.jsonl`) or the records themselves.

    Returns:
        The mean of `1 / len(options)` over multiple-choice records (0.0 when there are none).

    Example:
        >>> multiple_choice_chance([{"problem_type": "multiple choice", "options": ["A. yes", "B. no"]}])
        0.5
    """
    if isinstance(records, str | os.PathLike):
        with open(records, encoding="utf-8") as stream:
            records = [json.loads(line) for line in stream if line.strip()]
    odds = [1 / len(r["options"]) for r in records if r["problem_type"] == "multiple choice" and r.get("options")]
    return sum(odds) / len(odds) if odds else 0.0


# --------------------------------------------------------------------------------------------- items
def _mc(options: Sequence[str], correct: int, rng: np.random.Generator, shuffle: bool) -> tuple[list[str], str]:
    order = list(rng.permutation(len(options))) if shuffle else list(range(len(options)))
    letter = LETTERS[order.index(correct)]
    return [f"{LETTERS[i]}. {options[j]}" for i, j in enumerate(order)], letter


def _make_item(kind: str, choice: int, rng: np.random.Generator, w: int, h: int, t: int, shuffle: bool) -> _Item:
    """One question of `kind`; `choice` is its balanced answer index (option, count, word, ...)."""
    unit = min(w, h)
    frames = t if KINDS[kind][0] == "video" else 1

    def static(x: float, y: float) -> list[tuple[float, float] | None]:
        return [(x, y)] * frames

    def moving(direction: str, radius: int) -> list[tuple[float, float] | None]:
        dx, dy = _STEP[direction]
        span_x, span_y = 0.5 * w - radius, 0.5 * h - radius  # travel from one side of the centre to the other
        x0 = w / 2 - dx * span_x / 2 + rng.uniform(-0.05, 0.05) * w * (dx == 0)
        y0 = h / 2 - dy * span_y / 2 + rng.uniform(-0.05, 0.05) * h * (dy == 0)
        return [(x0 + dx * span_x * i / max(1, t - 1), y0 + dy * span_y * i / max(1, t - 1)) for i in range(t)]

    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    big = round(0.45 * unit)  # colour and order shapes fill most of the frame: every video token sees the colour
    if kind in ("colour", "image_colour"):
        colour = COLOURS[choice]
        options, letter = _mc(COLOURS, choice, rng, shuffle)
        if kind == "colour" and rng.random() < 0.5:
            centres = moving(DIRECTIONS[int(rng.integers(4))], big)
        else:
            centres = static(w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h)
        return _Item(kind, "What colour is the shape?", options, letter, f"The shape is {colour}, so {letter}.",
                     [_Sprite(colour, shape, big, centres)])
    if kind in ("position", "image_position"):
        radius = round(0.18 * unit)
        x = (0.25 if choice % 2 == 0 else 0.75) * w + rng.uniform(-0.03, 0.03) * w
        y = (0.25 if choice < 2 else 0.75) * h + rng.uniform(-0.03, 0.03) * h
        colour = COLOURS[int(rng.integers(4))]
        options, letter = _mc(QUADRANTS, choice, rng, shuffle)
        return _Item(kind, "Where is the shape?", options, letter,
                     f"The shape is at the {QUADRANTS[choice]}, so {letter}.",
                     [_Sprite(colour, shape, radius, static(x, y))])
    if kind == "direction":
        radius = round(0.18 * unit)
        colour = COLOURS[int(rng.integers(4))]
        options, letter = _mc(DIRECTIONS, choice, rng, shuffle)
        return _Item(kind, "Which way does the shape move?", options, letter,
                     f"The shape moves {DIRECTIONS[choice]}, so {letter}.",
                     [_Sprite(colour, shape, radius, moving(DIRECTIONS[choice], radius))])
    if kind == "order":
        first = COLOURS[choice]
        second = COLOURS[(choice + 1 + int(rng.integers(3))) % 4]
        half = t // 2
        x, y = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
        shape2 = SHAPES[int(rng.integers(len(SHAPES)))]
        sprites = [
            _Sprite(first, shape, big, [(x, y) if i < half else None for i in range(t)]),
            _Sprite(second, shape2, big, [(x, y) if i >= half else None for i in range(t)]),
        ]
        options, letter = _mc(COLOURS, choice, rng, shuffle)
        return _Item(kind, "Which colour appears first?", options, letter,
                     f"{first.capitalize()} shows up first, so {letter}.", sprites)
    if kind == "motion":
        radius = round(0.18 * unit)
        colour = COLOURS[int(rng.integers(4))]
        moves = choice == 0
        centres = moving(DIRECTIONS[int(rng.integers(4))], radius) if moves else static(
            w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.2, 0.2) * h
        )
        options, letter = _mc(("yes", "no"), choice, rng, shuffle)
        state = "moves" if moves else "stays still"
        return _Item(kind, "Does the shape move?", options, letter, f"The shape {state}, so {letter}.",
                     [_Sprite(colour, shape, radius, centres)])
    if kind in ("count", "image_count"):
        number = choice + 1
        radius = round(0.13 * unit)
        slots = [(0.2, 0.2), (0.8, 0.2), (0.5, 0.5), (0.2, 0.8), (0.8, 0.8)]  # corners and centre: never touching
        picked = rng.choice(len(slots), size=number, replace=False)
        sprites = [
            _Sprite(COLOURS[int(rng.integers(4))], SHAPES[int(rng.integers(3))], radius,
                    static(slots[s][0] * w, slots[s][1] * h))
            for s in picked
        ]
        noun = "shape" if number == 1 else "shapes"
        return _Item(kind, "How many shapes are there?", [], str(number), f"I count {number} {noun}.", sprites)
    if kind == "regression":
        percent = 20 + choice
        radius = round(0.16 * unit)
        colour = COLOURS[int(rng.integers(4))]
        x = round(percent * w / 100)
        y = h / 2 + rng.uniform(-0.15, 0.15) * h
        return _Item(kind, "Where is the centre of the shape, in percent of the width from the left?", [],
                     str(percent), f"The centre is at about {percent} percent.",
                     [_Sprite(colour, shape, radius, static(x, y))])
    if kind == "ocr":
        word = WORDS[choice]
        return _Item(kind, "What word is written?", [], word, f"The word is {word}.", [], word=word)
    if kind == "describe":
        colour = COLOURS[int(rng.integers(4))]
        radius = round(0.2 * unit)
        motion = (*DIRECTIONS, "still")[choice]
        if motion == "still":
            x, y = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
            centres, verb = static(x, y), "stays still"
        else:
            centres, verb = moving(motion, radius), f"moves {motion}"
        text = f"a {colour} {shape} {verb}"
        return _Item(kind, "What happens in the video? Answer in a few words.", [], text,
                     f"{text[0].upper()}{text[1:]}.", [_Sprite(colour, shape, radius, centres)])
    raise ValueError(f"Unknown kind {kind!r}; choose from {list(KINDS)}.")


_NUM_CHOICES = {
    "colour": 4, "image_colour": 4, "position": 4, "image_position": 4, "direction": 4, "order": 4, "motion": 2,
    "count": 3, "image_count": 3, "regression": 61, "ocr": len(WORDS), "describe": 5,
}


# --------------------------------------------------------------------------------------------- rendering
def _render(item: _Item, index: int, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for sprite in item.sprites:
        centre = sprite.centres[index]
        if centre is None:
            continue
        x, y, r = centre[0], centre[1], sprite.radius
        colour = PALETTE[sprite.colour]
        if sprite.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif sprite.shape == "square":
            s = 0.85 * r  # about the area of the circle
            draw.rectangle([x - s, y - s, x + s, y + s], fill=colour)
        else:
            draw.polygon([(x, y - 1.1 * r), (x - 1.15 * r, y + 0.9 * r), (x + 1.15 * r, y + 0.9 * r)], fill=colour)
    if item.word:
        font = ImageFont.load_default(size=max(8, round(0.34 * min(width, height))))
        left, top, right, bottom = draw.textbbox((0, 0), item.word, font=font)
        draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), item.word,
                  fill=(255, 255, 255), font=font)
    return np.asarray(image)


# One thread and no macroblock tree: x264's output is then the same bytes on every run and machine.
_X264_DETERMINISTIC = {"preset": "veryfast", "crf": "10", "threads": "1", "x264-params": "mbtree=0"}


# --------------------------------------------------------------------------------------------- splits
def _split_plan(n: int, mix: Mapping[str, float], rng: np.random.Generator) -> list[tuple[str, int]]:
    """(kind, balanced choice) for `n` items: counts per kind by largest remainder, choices cycled, then shuffled."""
    total = float(sum(mix.values()))
    quotas = {kind: n * weight / total for kind, weight in mix.items()}
    counts = {kind: int(q) for kind, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda k: (-(quotas[k] - counts[k]), list(mix).index(k)))
    for kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    plan = []
    for kind, count in counts.items():
        k = _NUM_CHOICES[kind]
        offset = int(rng.integers(k))
        if kind == "regression" and count <= k:  # positions spread over the range, not 20, 21, 22, ...
            choices = [int(c) for c in rng.choice(k, size=count, replace=False)]
        else:
            choices = [(offset + i) % k for i in range(count)]
        plan += [(kind, choice) for choice in choices]
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def _record(item: _Item, problem_id: int, path: str, with_process: bool) -> dict[str, Any]:
    data_type, problem_type = KINDS[item.kind]
    record: dict[str, Any] = {
        "problem_id": problem_id,
        "problem": item.problem,
        "data_type": data_type,
        "problem_type": problem_type,
        "options": item.options,
    }
    if with_process:
        record["process"] = f"<think>Let me see. {item.thought}</think>"
    record.update(
        solution=f"<answer>{item.answer}</answer>",
        path=path,
        data_source=f"VideoRFT-mini/{item.kind}",
    )
    return record


def generate_mini(
    output_dir: str | os.PathLike,
    num_train: int = 200,
    num_eval: int = 60,
    seed: int = 0,
    width: int = 56,
    height: int = 56,
    num_frames: int = 8,
    fps: float = 4.0,
    *,
    num_rl: int | None = None,
    mix: Mapping[str, float] | None = None,
    shuffle_options: bool = False,
    build: bool = True,
) -> dict[str, str]:
    """Writes VideoRFT-mini (clips, images, CoT / RL / eval JSONL) and builds the CoT and RL splits for the Hub.

    Deterministic: the same arguments give the same records and the same media bytes. Files already in
    `output_dir` with the same names are overwritten.

    Args:
        output_dir: folder to write (the media root of every record).
        num_train: records of the CoT split (SFT).
        num_eval: records of the held-out evaluation split.
        seed: the seed of everything random (kinds, colours, positions, words).
        width, height: frame size in pixels (even: H.264 in yuv420p).
        num_frames: frames per clip (at least 4: the order questions show one colour per half).
        fps: frame rate of the clips.
        num_rl: records of the RL split (default `num_train`); its clips differ from the CoT split's.
        mix: relative weight of each kind of `KINDS` (default `DEFAULT_MIX`); kinds left out are not generated.
        shuffle_options: shuffle the options of each multiple-choice question (default: fixed order per kind).
        build: also build `hub/VideoRFT-mini-CoT` and `hub/VideoRFT-mini-RL` with `dataset_builder.build_dataset`.

    Returns:
        Paths: `root`, `videos`, `images`, `cot`, `rl`, `eval` and, when built, `cot_dataset`, `rl_dataset`.

    Raises:
        ValueError: for sizes or counts out of range, or an unknown kind in `mix`.

    Example:
        >>> paths = generate_mini("out/mini", num_train=40, num_eval=12)  # doctest: +SKIP
        >>> sorted(paths)  # doctest: +SKIP
        ['cot', 'cot_dataset', 'eval', 'images', 'rl', 'rl_dataset', 'root', 'videos']
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = [kind for kind in mix if kind not in KINDS]
    if unknown:
        raise ValueError(f"Unknown kinds {unknown} in mix; choose from {list(KINDS)}.")
    if not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix needs at least one kind with a positive weight and no negative weight.")
    if width % 2 or height % 2 or min(width, height) < 28:
        raise ValueError(f"width and height must be even and at least 28 pixels, got {width}x{height}.")
    if num_frames < 4:
        raise ValueError(f"num_frames must be at least 4, got {num_frames}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    num_rl = num_train if num_rl is None else num_rl
    if min(num_train, num_rl, num_eval) < 0:
        raise ValueError("num_train, num_rl and num_eval must be >= 0.")

    root = Path(output_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = {"root": str(root), "videos": str(root / "videos"), "images": str(root / "images")}
    next_id = 0
    for split, count in (("cot", num_train), ("rl", num_rl), ("eval", num_eval)):
        plan_rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
        records = []
        for position, (kind, choice) in enumerate(_split_plan(count, mix, plan_rng)):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], position])
            item = _make_item(kind, choice, rng, width, height, num_frames, shuffle_options)
            problem_id = next_id
            next_id += 1
            if KINDS[kind][0] == "video":
                relative = f"videos/mini_{problem_id:06d}.mp4"
                frames = [_render(item, i, width, height) for i in range(num_frames)]
                write_frames_mp4(str(root / relative), frames, fps, options=_X264_DETERMINISTIC)
            else:
                from PIL import Image

                relative = f"images/mini_{problem_id:06d}.png"
                Image.fromarray(_render(item, 0, width, height)).save(root / relative)
            records.append(_record(item, problem_id, f"./{relative}", with_process=split == "cot"))
        paths[split] = str(root / f"{split}.jsonl")
        write_jsonl(paths[split], records)

    if build:
        from .dataset_builder import DatasetSpec, build_dataset

        with tempfile.TemporaryDirectory() as tmp:
            card = os.path.join(tmp, "card.md")
            with open(card, "w", encoding="utf-8") as stream:
                stream.write(_CARD)
            for split, name, with_process in (("cot", "VideoRFT-mini-CoT", True), ("rl", "VideoRFT-mini-RL", False)):
                spec = DatasetSpec(name, card, require_process=with_process, pretty_name=name, license="apache-2.0",
                                   tags=("video", "reasoning", "synthetic", "videorft"))
                result = build_dataset(paths[split], root / "hub" / name, spec, progress=False)
                if result.rows_rejected:  # every record is written by this module: a rejection is a bug here
                    rejected = result.report["rejections"]
                    raise AssertionError(f"{name}: {result.rows_rejected} records rejected: {rejected}")
                paths[f"{split}_dataset"] = str(root / "hub" / name)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m videorft_hf.mini OUTPUT_DIR [--num-train N] [--num-eval N] [--seed S] ...`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--num-train", type=int, default=200, help="records of the CoT split (default 200)")
    parser.add_argument("--num-rl", type=int, default=None, help="records of the RL split (default: --num-train)")
    parser.add_argument("--num-eval", type=int, default=60, help="records of the evaluation split (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=56)
    parser.add_argument("--height", type=int, default=56)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--shuffle-options", action="store_true", help="shuffle multiple-choice options per item")
    parser.add_argument("--no-build", action="store_true", help="write JSONL only, no Hub-native folders")
    args = parser.parse_args(argv)
    paths = generate_mini(
        args.output_dir, args.num_train, args.num_eval, args.seed, args.width, args.height, args.num_frames, args.fps,
        num_rl=args.num_rl, shuffle_options=args.shuffle_options, build=not args.no_build,
    )
    print(json.dumps(paths, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
