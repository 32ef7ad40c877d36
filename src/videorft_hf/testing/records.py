"""Records in the release schema for tests and benchmarks (`make_record`), and a set of videos with questions about
each (`write_video_questions`)."""

from __future__ import annotations

import os
from pathlib import Path

from .media import write_test_video

# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


def make_record(
    problem_id: int,
    problem_type: str,
    solution: str,
    path: str,
    data_type: str = "video",
    options: list[str] | None = None,
    problem: str = "What happens?",
    data_source: str = "synthetic",
) -> dict:
    """One record in the release schema, `solution` wrapped in answer tags.

    `options` is left out of the record when `None` (it is optional in the release files).
    """
    record = {
        "problem_id": problem_id,
        "problem": problem,
        "data_type": data_type,
        "problem_type": problem_type,
        "solution": f"<answer>{solution}</answer>",
        "path": path,
        "data_source": data_source,
    }
    if options is not None:
        record["options"] = options
    return record


def write_video_questions(root: str | os.PathLike, num_videos: int, questions_per_video: int) -> list[dict]:
    """Writes `num_videos` 4 s 320x240 clips (`v<i>.mp4`) under `root` and returns yes/no questions about each, in
    the release schema (for benchmarks that measure per-video reuse)."""
    records = []
    for v in range(num_videos):
        write_test_video(Path(root) / f"v{v}.mp4", num_frames=120, fps=30.0, width=320, height=240)
        records += [
            make_record(
                v * questions_per_video + q, "multiple choice", "A", f"./v{v}.mp4", options=["A. yes", "B. no"],
                problem=f"Question {q} about video {v}?", data_source="bench",
            )
            for q in range(questions_per_video)
        ]
    return records
