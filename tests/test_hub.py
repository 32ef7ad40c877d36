"""`videorft push` and `videorft_hf.hub`: dry-run folders load back (transformers, peft, datasets), cards parse with
huggingface_hub's card classes, and a real push makes one repo creation and one commit against a fake Hub on loopback,
with the token only ever in the Authorization header."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import datasets
import pytest
import torch
import yaml
from huggingface_hub import DatasetCard, EvalResult, ModelCard, constants
from transformers import AutoModelForImageTextToText, AutoProcessor

from videorft_hf import hub
from videorft_hf.cli import main as videorft
from videorft_hf.evaluation import PAPER_RESULTS
from videorft_hf.hub import (
    CheckpointError,
    HubOfflineError,
    TokenLeakError,
    plan_model_repo,
    push_dataset,
    push_model,
)
from videorft_hf.scripts import push as push_script
from videorft_hf.testing import save_tiny_vlm, write_test_video

SENTINEL_TOKEN = "hf_SENTINELtokenDoNotLeak0123456789abcd"
BASE_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
AGGREGATE = {**PAPER_RESULTS["VideoRFT-7B"], "average": 58.7}  # the paper's VideoRFT-7B scores and their mean
RECIPE = {
    "model_name_or_path": "QiWang98/VideoRFT-SFT",
    "dataset_name": "you/VideoRFT-RL-310K",
    "learning_rate": 1.0e-6,
    "lr_scheduler_type": "cosine",
    "beta": 0.04,
    "loss_type": "grpo",
    "num_generations": 8,
    "reward_funcs": ["format_reward", "accuracy_reward", "semantic_consistency_reward"],
    "length_bonus": True,
    "video_sampling_preset": "videorft-train",
    "system_prompt": "You are a careful video analyst.",
    "hub_token": SENTINEL_TOKEN,  # a credential in a recipe must never reach the card
}
datasets.disable_progress_bars()


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL saved like a trainer output, training state and trl's own card included."""
    path = save_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("ckpt") / "checkpoint-10")
    (path / "optimizer.pt").write_bytes(b"optimizer state")
    (path / "rng_state.pth").write_bytes(b"rng")
    (path / "training_args.bin").write_bytes(b"pickle with hub_token")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 10, "epoch": 0.5, "log_history": []}))
    (path / "README.md").write_text("---\ntags:\n- trl\n---\ntrl's card\n")
    return path


@pytest.fixture(scope="module")
def tiny_adapter(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """A LoRA adapter (non-zero B, so merging changes the weights) on the tiny checkpoint; returns (adapter, base)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    adapter = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(adapter)
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(adapter)
    return adapter, tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A dataset folder built by dataset_scripts/videorft_rl_310k (3 shards of 2 rows)."""
    return _build_dataset(tmp_path_factory.mktemp("data"), shard_rows=2)


def _records(n: int) -> list[dict]:
    kinds = ("multiple choice", "numerical", "OCR", "free-form", "regression")
    return [
        {
            "problem_id": i,
            "problem": f"Question {i}?",
            "data_type": "video" if i % 2 else "image",
            "problem_type": kinds[i % len(kinds)],
            "options": ["A. red", "B. blue"] if kinds[i % len(kinds)] == "multiple choice" else [],
            "solution": "<answer>B</answer>"
            if kinds[i % len(kinds)] == "multiple choice"
            else f"<answer>{i}</answer>",
            "path": f"./clips/{i}.{'mp4' if i % 2 else 'png'}",
            "data_source": "test",
        }
        for i in range(n)
    ]


def _build_dataset(root: Path, shard_rows: int) -> Path:
    import importlib.util

    from videorft_hf.dataset_builder import build_dataset

    script = Path(__file__).resolve().parents[1] / "dataset_scripts" / "videorft_rl_310k" / "build.py"
    spec = importlib.util.spec_from_file_location("build_rl_for_hub_test", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = root / "rl.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _records(6)))
    out = root / "VideoRFT-RL-310K"
    build_dataset(source, out, module.SPEC, shard_rows=shard_rows, progress=False)
    return out


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no stored login reaches the tests


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ tags and cards
# ------------------------------------------------------------------------------------------------ dry runs
def test_full_model_dry_run_loads_back_with_a_parsing_card(tiny_checkpoint, tmp_path, capsys):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    eval_json = tmp_path / "aggregate.json"
    eval_json.write_text(json.dumps(AGGREGATE))
    out = tmp_path / "repo"
    argv = ["model", str(tiny_checkpoint), "--repo-id", "you/VideoRFT-tiny", "--recipe", str(recipe)]
    argv += ["--eval-results", str(eval_json), "--base-model", BASE_ID, "--license", "apache-2.0"]
    argv += ["--hardware", "1x CPU", "--tag", "video-reasoning", "--dry-run", "--output-dir", str(out)]
    assert push_script.main(argv) == 0
    assert "nothing was uploaded" in capsys.readouterr().out

    files = _files(out)
    assert sorted(files) == [
        "README.md",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]  # no optimizer / RNG state, no training_args.bin, trl's README replaced
    assert files["model.safetensors"] == (tiny_checkpoint / "model.safetensors").read_bytes()
    original = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert AutoProcessor.from_pretrained(out).tokenizer.chat_template

    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.base_model == BASE_ID
    assert data.datasets == ["you/VideoRFT-RL-310K"]  # from the recipe's dataset_name
    assert (data.library_name, data.license, data.pipeline_tag) == ("transformers", "apache-2.0", "video-text-to-text")
    assert data.tags == ["trl", "grpo", "videorft", "video-reasoning"]
    assert data.model_name == "VideoRFT-tiny"
    assert len(data.eval_results) == 6 and all(isinstance(r, EvalResult) for r in data.eval_results)
    assert {r.dataset_name: r.metric_value for r in data.eval_results}["MVBench"] == 62.1
    text = card.text
    for expected in (
        "`format_reward`",
        "| Reward shaping | length bonus |",  # the recipe does not state its values, so neither does the card
        "preset `videorft-train`: 16 frames at 2 fps",
        "beta 0.04",
        "Optimizer steps | 10 (epoch 0.5)",
        "1x CPU",
        "| average | accuracy | 58.7 |",
        "arXiv:2505.12434",
        "TRL: Transformer Reinforcement Learning",
    ):
        assert expected in text, expected
    assert SENTINEL_TOKEN not in files["README.md"].decode() and "hub_token" not in text


def test_card_quick_start_runs_on_the_dry_run_folder(tiny_checkpoint, tmp_path):
    """The usage snippet of the card is real code: run it against the dry-run folder and a test video."""
    out = tmp_path / "repo"
    push_model(
        tiny_checkpoint,
        "you/VideoRFT-tiny",
        stage="sft",
        recipe={"system_prompt": "Be brief."},
        dry_run=True,
        output_dir=out,
    )
    snippet = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    video = write_test_video(tmp_path / "clip.mp4", num_frames=8, fps=4.0, width=56, height=56)
    snippet = snippet.replace('"you/VideoRFT-tiny"', repr(str(out))).replace('"video.mp4"', repr(str(video)))
    snippet = snippet.replace("max_new_tokens=1024", "max_new_tokens=3")
    assert '"role": "system"' in snippet  # the recipe's system prompt is part of the usage example
    exec(compile(snippet, "quick_start", "exec"), {})


def test_adapter_and_merged_dry_runs_load_back(tiny_adapter, tmp_path):
    from peft import PeftModel

    adapter, base_dir = tiny_adapter
    inputs = {"input_ids": torch.tensor([[257, 72, 105, 258]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    torch.manual_seed(0)
    reference = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), adapter).eval()
    expected = reference(**inputs).logits

    out = tmp_path / "adapter-repo"
    result = push_model(adapter, "you/VideoRFT-lora", stage="sft", base_model=BASE_ID, dry_run=True, output_dir=out)
    assert "adapter_model.safetensors" in result.files and "model.safetensors" not in result.files
    loaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), out).eval()
    torch.testing.assert_close(loaded(**inputs).logits, expected)
    card = ModelCard.load(out / "README.md")
    assert (card.data.library_name, card.data.base_model) == ("peft", BASE_ID)
    assert card.data.tags == ["trl", "sft", "videorft", "lora"]
    assert "PeftModel.from_pretrained" in card.text and "r 4, lora_alpha 8" in card.text

    merged_out = tmp_path / "merged-repo"
    result = push_model(
        adapter, "you/VideoRFT-merged", kind="merged", stage="sft", dry_run=True, output_dir=merged_out
    )
    assert "model.safetensors" in result.files and "adapter_config.json" not in result.files
    merged = AutoModelForImageTextToText.from_pretrained(merged_out).eval()
    torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-4, atol=1e-4)
    plain = AutoModelForImageTextToText.from_pretrained(base_dir).eval()
    assert not torch.allclose(plain(**inputs).logits, expected)  # the adapter does change the model
    card = ModelCard.load(merged_out / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.base_model is None  # the adapter's base is a local folder: not a Hub id, not claimed


def test_dataset_dry_run_loads_with_load_dataset(tiny_dataset, tmp_path):
    out = tmp_path / "dataset-repo"
    result = push_dataset(tiny_dataset, "you/VideoRFT-RL-tiny", dry_run=True, output_dir=out)
    assert result.files == [
        "README.md",
        "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet",
        "validation_report.json",
    ]
    rows = datasets.load_dataset(str(out), split="train")
    assert rows["problem_id"] == list(range(6))
    card = DatasetCard.load(out / "README.md")
    assert card.data.to_dict()["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert "<this repo id>" not in card.text and "you/VideoRFT-RL-tiny" in card.text


def test_errors_say_what_to_fix(tiny_checkpoint, tiny_adapter, tmp_path):
    with pytest.raises(CheckpointError, match="stage"):
        plan_model_repo(tiny_checkpoint, "you/x")
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        plan_model_repo(tiny_checkpoint, "you/x", kind="adapter", stage="sft")
    with pytest.raises(CheckpointError, match="is a peft adapter"):
        plan_model_repo(tiny_adapter[0], "you/x", kind="full", stage="sft")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        (bare / name).write_bytes((tiny_checkpoint / name).read_bytes())
    with pytest.raises(CheckpointError, match="--processor"):
        plan_model_repo(bare, "you/x", stage="sft", work_dir=tmp_path / "w")
    plan = plan_model_repo(bare, "you/x", stage="sft", processor=str(tiny_checkpoint), work_dir=tmp_path / "w")
    assert {"processor_config.json", "tokenizer_config.json"} <= set(plan.files)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert videorft(["push", "dataset", str(tmp_path / "nothing"), "--repo-id", "you/d", "--dry-run"]) == 1
    with pytest.raises(FileExistsError, match="not empty"):
        push_model(tiny_checkpoint, "you/x", stage="sft", dry_run=True, output_dir=tmp_path / "taken")


def test_a_file_holding_the_token_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL_TOKEN)
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for path in tiny_checkpoint.iterdir():
        (leaky / path.name).write_bytes(path.read_bytes())
    (leaky / "chat_template.jinja").write_text("{{ messages }} " + SENTINEL_TOKEN)
    with pytest.raises(TokenLeakError, match="chat_template.jinja") as error:
        push_model(leaky, "you/x", stage="sft", dry_run=True, output_dir=tmp_path / "out")
    assert SENTINEL_TOKEN not in str(error.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ real pushes
class FakeHub:
    """A minimal Hub on 127.0.0.1 that records every request and keeps repository files per branch.

    It answers what huggingface_hub 2.4's `create_repo`, `create_branch`, `list_repo_files` and `create_commit` call:
    `/api/repos/create`, `/api/validate-yaml`, `/api/{type}s/{repo}/branch|tree|preupload|commit/{rev}`, the LFS batch
    endpoint `/{prefix}{repo}.git/info/lfs/objects/batch` and the upload / verify URLs it hands out (anything else,
    such as huggingface_hub's own `/api/agent-harnesses` lookup, gets a recorded 404). Like the Hub,
    preupload puts `*.safetensors` and `*.parquet` in LFS; a commit naming an LFS file that was not uploaded fails.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.repos: dict[tuple[str, str], dict] = {}
        self.lfs: dict[str, bytes] = {}
        self.commits: list[dict] = []
        hub_state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while (size := int(self.rfile.readline().strip(), 16)) > 0:
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                url = urlsplit(self.path)
                hub_state.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                status, payload = hub_state.route(self.command, url.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload['organization']}/{payload['name']}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 carries the url too
                return 409, {"error": "You already created this repo", "url": f"{self.url}/{prefix}{repo_id}"}
            self.repos[(repo_type, repo_id)] = {"visibility": payload.get("visibility"), "branches": {"main": {}}}
            return 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if match := re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            objects = []
            for obj in json.loads(body)["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in self.lfs:
                    entry["actions"] = {
                        "upload": {"href": f"{self.url}/_lfs/{obj['oid']}"},
                        "verify": {"href": f"{self.url}/_lfs/verify"},
                    }
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}
        if match := re.fullmatch(r"/_lfs/([0-9a-f]{64})", path):
            if hashlib.sha256(body).hexdigest() != match.group(1):
                return 400, {"error": "sha256 mismatch"}
            self.lfs[match.group(1)] = body
            return 200, {}
        if path == "/_lfs/verify":
            return (200, {}) if json.loads(body)["oid"] in self.lfs else (404, {"error": "not uploaded"})
        match = re.fullmatch(
            r"/api/(models|datasets)/([^/]+/[^/]+)/(branch|tree|preupload|commit)/([^/]+)(/.*)?", path
        )
        if not match:
            return 404, {"error": f"unknown endpoint {method} {path}"}
        repo_type, repo_id, action, revision = (
            match.group(1)[:-1],
            match.group(2),
            match.group(3),
            unquote(match.group(4)),
        )
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}
        branches = repo["branches"]
        if action == "branch":
            if revision in branches:
                return 409, {"error": "branch exists"}
            branches[revision] = dict(branches["main"])
            return 200, {}
        if revision not in branches:
            return 404, {"error": "Invalid rev id"}
        if action == "tree":
            return 200, [
                {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                for p, c in sorted(branches[revision].items())
            ]
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {
                        "path": f["path"],
                        "shouldIgnore": False,
                        "oid": None,
                        "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".parquet")) else "regular",
                    }
                    for f in files
                ],
            }
        lines = [json.loads(line) for line in body.decode().splitlines() if line]
        tree = dict(branches[revision])
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                tree[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} of {value['path']} was not uploaded"}
                tree[value["path"]] = self.lfs[value["oid"]]
            elif line["key"] == "deletedFile":
                tree.pop(value["path"])
        branches[revision] = tree
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append({"repo": repo_id, "revision": revision, "header": lines[0]["value"], "ops": lines[1:]})
        prefix = "" if repo_type == "model" else "datasets/"
        return 200, {
            "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        }

    def calls(self, method: str, pattern: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and re.fullmatch(pattern, r["path"])]


@pytest.fixture
def fake_hub(monkeypatch):
    """Points huggingface_hub at a FakeHub, lifts the tests' offline mode for this test only, and sets a sentinel
    token as HF_TOKEN. Xet is off: the fake speaks the LFS protocol, not Xet's content-addressed storage."""
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", SENTINEL_TOKEN)
    yield server
    server.close()


def _decoded_bodies(server: FakeHub) -> list[bytes]:
    """Every request body, plus the base64 payloads inside them (commit contents, preupload samples)."""
    bodies = []
    for request in server.requests:
        bodies.append(request["body"])
        for b64 in re.findall(rb'"(?:content|sample)": "([A-Za-z0-9+/=]*)"', request["body"]):
            bodies.append(base64.b64decode(b64))
    return bodies


def test_push_model_is_one_repo_creation_and_one_commit(fake_hub, tiny_checkpoint, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    recipe = dict(RECIPE)
    dry = push_model(
        tiny_checkpoint,
        "you/VideoRFT-tiny",
        recipe=recipe,
        eval_results=AGGREGATE,
        dry_run=True,
        output_dir=tmp_path / "dry",
    )
    assert fake_hub.requests == []  # a dry run uploads nothing

    argv = ["model", str(tiny_checkpoint), "--repo-id", "you/VideoRFT-tiny", "--private", "--revision", "v1"]
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # the card keeps the recipe's order
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(AGGREGATE))
    argv += ["--recipe", str(recipe_path), "--eval-results", str(eval_path)]
    assert push_script.main(argv) == 0
    printed = capsys.readouterr()
    assert "in one commit" in printed.out
    assert SENTINEL_TOKEN not in printed.out + printed.err

    (create,) = fake_hub.calls("POST", "/api/repos/create")
    assert json.loads(create["body"]) == {
        "name": "VideoRFT-tiny",
        "organization": "you",
        "visibility": "private",
        "type": "model",
    }
    assert len(fake_hub.calls("POST", "/api/models/you/VideoRFT-tiny/branch/v1")) == 1
    assert len(fake_hub.commits) == 1 and fake_hub.commits[0]["revision"] == "v1"
    assert len(fake_hub.calls("PUT", "/_lfs/[0-9a-f]{64}")) == 1  # model.safetensors went through LFS
    uploaded = fake_hub.repos[("model", "you/VideoRFT-tiny")]["branches"]["v1"]
    dry_files = _files(dry.folder)
    assert uploaded == dry_files  # exactly the dry-run folder, byte for byte
    assert fake_hub.repos[("model", "you/VideoRFT-tiny")]["branches"]["main"] == {}

    # The Hub's own endpoints get the token (the LFS verify URL is the Hub's); the storage PUT URL does not.
    repo_api = re.compile(r"/api/(repos/create|validate-yaml|models/.*)|/.*\.git/info/lfs/objects/batch|/_lfs/verify")
    for request in fake_hub.requests:
        if repo_api.fullmatch(request["path"]):
            assert request["headers"].get("authorization") == f"Bearer {SENTINEL_TOKEN}", request["path"]
        else:  # the LFS storage PUT, huggingface_hub's own /api/agent-harnesses lookup
            assert SENTINEL_TOKEN not in json.dumps(request["headers"]), request["path"]
    assert not any(SENTINEL_TOKEN.encode() in body for body in _decoded_bodies(fake_hub))
    assert not any(SENTINEL_TOKEN.encode() in content for content in _files(dry.folder).values())
    assert SENTINEL_TOKEN not in caplog.text


def test_push_dataset_twice_replaces_stale_shards_in_one_commit_each(fake_hub, tiny_dataset, tmp_path):
    first = push_dataset(tiny_dataset, "you/VideoRFT-RL-tiny")
    assert first.commit_url.startswith(f"{fake_hub.url}/datasets/you/VideoRFT-RL-tiny/commit/")
    rebuilt = _build_dataset(tmp_path, shard_rows=100)  # one shard now
    push_dataset(rebuilt, "you/VideoRFT-RL-tiny")

    assert len(fake_hub.calls("POST", "/api/repos/create")) == 2  # exist_ok: the second answer is 409
    assert len(fake_hub.commits) == 2
    deleted = sorted(op["value"]["path"] for op in fake_hub.commits[1]["ops"] if op["key"] == "deletedFile")
    assert deleted == [
        "data/train-00000-of-00003.parquet",
        "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet",
    ]
    remote = fake_hub.repos[("dataset", "you/VideoRFT-RL-tiny")]["branches"]["main"]
    assert sorted(remote) == ["README.md", "data/train-00000-of-00001.parquet", "validation_report.json"]
    out = tmp_path / "remote"
    for path, content in remote.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    assert datasets.load_dataset(str(out), split="train")["problem_id"] == list(range(6))
    assert not any(SENTINEL_TOKEN.encode() in body for body in _decoded_bodies(fake_hub))


def test_offline_push_raises_before_any_request(tiny_checkpoint, tiny_dataset, monkeypatch, capsys):
    server = FakeHub()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", SENTINEL_TOKEN)
        assert constants.HF_HUB_OFFLINE  # tests/conftest.py
        with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE"):
            push_model(tiny_checkpoint, "you/x", stage="sft")
        with pytest.raises(HubOfflineError, match="--dry-run"):
            push_dataset(tiny_dataset, "you/d")
        assert videorft(["push", "dataset", str(tiny_dataset), "--repo-id", "you/d"]) == 1
        assert "offline mode" in capsys.readouterr().err
        assert server.requests == []
    finally:
        server.close()


def test_push_without_a_token_says_how_to_log_in(tiny_dataset, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub.HubAuthError, match="hf auth login"):
        push_dataset(tiny_dataset, "you/d")


# ------------------------------------------------------------------------------------------------ cards from what ran
def test_a_card_without_a_run_record_states_no_placeholders(tiny_checkpoint, tmp_path):
    out = push_model(tiny_checkpoint, "you/x", stage="grpo", dry_run=True, output_dir=tmp_path / "repo").folder
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None
    text = card.text
    assert "A fine-tuned model, trained with the VideoRFT recipe (GRPO)." in text
    for placeholder in ("not recorded", "not given", "(#)", "<base model id>", "| Rewards |", "| Hardware |"):
        assert placeholder not in text, placeholder
    assert "| Optimizer steps | 10 (epoch 0.5) |" in text  # what the checkpoint's trainer_state.json shows


def test_recipe_values_are_labelled_as_the_recipes_and_keep_the_shaping_token_counts(tiny_checkpoint, tmp_path):
    recipe = {**RECIPE, "length_bonus_min_tokens": 8, "length_bonus_max_tokens": 48, "length_bonus_value": 0.2}
    out = push_model(tiny_checkpoint, "you/x", recipe=recipe, dry_run=True, output_dir=tmp_path / "repo").folder
    text = (out / "README.md").read_text()
    assert "these values are the recipe's, not recorded from the run" in text
    assert "length bonus +0.2 for correct completions of 8-48 tokens" in text  # not the 320-512 defaults
    assert SENTINEL_TOKEN not in text


def test_the_run_record_decides_the_stage_and_a_missing_eval_file_is_a_typed_error(tiny_checkpoint, tmp_path, capsys):
    import shutil

    checkpoint = tmp_path / "grpo"
    shutil.copytree(tiny_checkpoint, checkpoint)
    (checkpoint / "videorft_run.json").write_text(json.dumps({"stage": "grpo", "base_model": BASE_ID}))
    plan = plan_model_repo(checkpoint, "you/x")  # no --stage: the run record's
    assert "trl, grpo" in ", ".join(ModelCard(plan.files["README.md"].decode()).data.tags)
    with pytest.raises(CheckpointError, match="trained by the grpo stage .* not sft"):
        plan_model_repo(checkpoint, "you/x", stage="sft")
    argv = ["model", str(checkpoint), "--repo-id", "you/x", "--eval-results", "eval/results.json", "--dry-run"]
    assert videorft(["push", *argv, "--output-dir", str(tmp_path / "out")]) == 1
    assert "Evaluation results eval/results.json does not exist: pass the results.json that `videorft eval`" in (
        capsys.readouterr().err
    )
    with pytest.raises(CheckpointError, match=r"has no videorft_run.json .*\(--stage\)"):
        plan_model_repo(tiny_checkpoint, "you/x")


# ------------------------------------------------------------------------------------------------ what cards claim
def _results_json(folder: Path, model: str, **extra) -> Path:
    """A results.json as `videorft eval` writes it for `model` (one benchmark)."""
    from videorft_hf.evaluation import aggregate_results, results_to_model_index

    records = [{"problem_type": "multiple choice", "score": 1.0, "error": None}]
    aggregate = aggregate_results({"MVBench": records}, model_name_or_path=model, adapter_path=None, **extra)
    aggregate["model-index"] = results_to_model_index(aggregate, Path(model).name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(aggregate))
    return folder / "results.json"


def test_eval_results_of_another_model_are_refused_unless_allowed_and_then_labelled(tiny_checkpoint, tmp_path):
    import os
    import shutil

    checkpoint = tmp_path / "out" / "sft"
    shutil.copytree(tiny_checkpoint, checkpoint)
    other = tmp_path / "out" / "grpo"
    other.mkdir()
    theirs = _results_json(tmp_path / "eval-grpo", "outputs/demo/grpo", model_abspath=str(other))
    with pytest.raises(CheckpointError, match=r"holds the scores of outputs/demo/grpo .* not of .*sft") as error:
        plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=theirs)
    assert "--allow-other-model-results" in str(error.value)
    card = ModelCard(plan_model_repo(
        checkpoint, "you/x", stage="sft", eval_results=theirs, allow_other_model_results=True
    ).files["README.md"].decode())
    assert "These are the scores of `outputs/demo/grpo`, not of this checkpoint" in card.text
    assert "--allow-other-model-results" in card.text

    # this checkpoint's: by its recorded absolute path, by the path as written, or by the repo id it is pushed as
    ours = _results_json(tmp_path / "eval-sft", "elsewhere/sft", model_abspath=str(checkpoint.resolve()))
    card = ModelCard(plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=ours).files["README.md"].decode())
    assert "Scores of this checkpoint from `videorft eval` (percent; `results.json`)" in card.text
    assert card.data.eval_results[0].metric_value == 100.0
    relative = _results_json(tmp_path / "eval-rel", os.path.relpath(checkpoint))  # an older results.json
    plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=relative)
    hub_id = _results_json(tmp_path / "eval-hub", "you/x")
    plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=hub_id)
    with pytest.raises(CheckpointError, match="holds the scores of you/other"):
        plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=_results_json(tmp_path / "e4", "you/other"))

    # scores that name no model: published as given, and the card says they were not checked
    card = ModelCard(plan_model_repo(checkpoint, "you/x", stage="sft", eval_results=AGGREGATE).files["README.md"].decode())
    assert "names no model, so they were not checked against this checkpoint" in card.text


def test_the_command_refuses_another_models_results_in_one_line(tiny_checkpoint, tmp_path, capsys):
    theirs = _results_json(tmp_path / "eval", "outputs/demo/grpo")
    argv = ["push", "model", str(tiny_checkpoint), "--repo-id", "you/x", "--stage", "sft", "--dry-run",
            "--output-dir", str(tmp_path / "repo"), "--eval-results", str(theirs)]
    assert videorft(argv) == 1
    err = capsys.readouterr().err
    assert f"videorft push: error: CheckpointError: {theirs} holds the scores of outputs/demo/grpo" in err
    assert "Traceback" not in err and not (tmp_path / "repo").exists()
    assert videorft([*argv, "--allow-other-model-results"]) == 0
    assert "not of this checkpoint" in (tmp_path / "repo" / "README.md").read_text()


def test_an_interrupted_output_folder_is_reported_as_such(tiny_checkpoint, tmp_path):
    """A run that crashed leaves trl's card at the top and checkpoints, but no final model and no run record."""
    import shutil

    out = tmp_path / "grpo"
    shutil.copytree(tiny_checkpoint, out / "checkpoint-2")
    shutil.copytree(tiny_checkpoint, out / "checkpoint-4")
    (out / "README.md").write_text("---\ntags:\n- trl\n---\ntrl's card\n")
    with pytest.raises(CheckpointError) as error:
        plan_model_repo(out, "you/x")
    message = str(error.value)
    assert "a run that did not finish: it holds checkpoint-2, checkpoint-4" in message
    assert "not the final model" in message and "videorft_run.json" in message
    assert "--resume_from_checkpoint last" in message and f"videorft push model {out / 'checkpoint-4'}" in message
    assert "Cannot tell the training stage" not in message


def test_a_dataset_card_names_the_files_it_was_built_from(tiny_dataset):
    text = (tiny_dataset / "README.md").read_text()
    report = json.loads((tiny_dataset / "validation_report.json").read_text())
    assert f"It was built from the input file `rl.jsonl` (SHA-256 `{report['inputs'][0]['sha256'][:12]}...`)" in text
    assert "from the release files" not in text
