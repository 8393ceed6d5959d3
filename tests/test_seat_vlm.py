"""Cas-SEAT self-evaluation SFT for vision-language models (arXiv 2501.05662) on a tiny LLaVA built locally."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignment.seat.format import compose, self_eval_prompt
from alignment.seat.vlm import make_tiny_vlm, read_vlm_jsonl, run_vlm_sft
from tandem.errors import TandemError

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def _write_data(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (name, rgb) in enumerate(COLOURS.items(), 1):
        Image.new("RGB", (40, 32), rgb).save(folder / f"{name}.png")
        question = f"How many {name} squares are in the picture ?"
        verdict = "Accept" if n % 2 else "Refine"
        answer = compose(f"I count the {name} squares . The answer is {n} .", "The count looks right .", verdict,
                         str(n))
        lines.append({"images": [f"{name}.png"],
                      "prompt": [{"role": "user", "content": [{"type": "image"},
                                                              {"type": "text", "text": self_eval_prompt(question)}]}],
                      "completion": [{"role": "assistant", "content": answer}]})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def _words(rows: list[dict]) -> list[str]:
    return [p["text"] for r in rows for m in r["prompt"] + r["completion"] for p in m["content"] if p["type"] == "text"]


def test_vlm_sft_trains_two_steps(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    rows = read_vlm_jsonl(_write_data(tmp_path / "data"))
    assert len(rows) == 4 and all(Path(r["images"][0]).is_absolute() for r in rows)
    model_dir = make_tiny_vlm(tmp_path / "tiny", words=_words(rows))
    proc = AutoProcessor.from_pretrained(model_dir)
    text = _words(rows)[0]
    assert proc.tokenizer.unk_token_id not in proc.tokenizer(text, add_special_tokens=False).input_ids

    report = run_vlm_sft(model_dir, rows, tmp_path / "out", epochs=1, batch_size=2, lr=5e-3, max_length=None,
                         seed=0)
    assert report["steps"] == 2
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["final_loss"])
    final = Path(report["final"])
    assert final.is_dir() and final == tmp_path / "out" / "final"
    trained = AutoModelForImageTextToText.from_pretrained(final)
    before = AutoModelForImageTextToText.from_pretrained(model_dir)
    old = dict(before.named_parameters())
    assert any(not torch.equal(p, old[n]) for n, p in trained.named_parameters())
    assert AutoProcessor.from_pretrained(final).tokenizer(text).input_ids == proc.tokenizer(text).input_ids


def test_read_refuses_missing_image(tmp_path: Path) -> None:
    path = _write_data(tmp_path)
    (tmp_path / "blue.png").unlink()
    with pytest.raises(TandemError, match=r"data\.jsonl:3: image 'blue\.png' not found"):
        read_vlm_jsonl(path)


def test_read_refuses_bad_json_line(tmp_path: Path) -> None:
    path = _write_data(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:-5]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TandemError, match=r"data\.jsonl:2: not valid JSON"):
        read_vlm_jsonl(path)


def test_read_refuses_placeholder_mismatch(tmp_path: Path) -> None:
    path = _write_data(tmp_path)
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    row["images"] = row["images"] * 2
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(TandemError, match=r"data\.jsonl:1: the prompt has 1"):
        read_vlm_jsonl(path)


def test_vlm_sft_lora_resumes(tmp_path: Path) -> None:
    rows = read_vlm_jsonl(_write_data(tmp_path / "data"))
    model_dir = make_tiny_vlm(tmp_path / "tiny", words=_words(rows))
    out = tmp_path / "out"
    first = run_vlm_sft(model_dir, rows, out, epochs=1, batch_size=2, lr=5e-3, max_length=200, seed=0, lora_r=4,
                        save_steps=1)
    assert first["steps"] == 2 and not first["resumed"]
    assert (out / "final" / "adapter_config.json").is_file()
    again = run_vlm_sft(model_dir, rows, out, epochs=2, batch_size=2, lr=5e-3, max_length=200, seed=0, lora_r=4,
                        save_steps=1)
    assert again["steps"] == 4 and again["resumed"] and math.isfinite(again["final_loss"])


def test_seat_sft_config_takes_the_vision_path(tmp_path: Path) -> None:
    """``tandem align sft`` with ``vision: true``: the CoT / self-evaluation mix goes through the VLM trainer."""
    from alignment.seat.config import SeatSFTConfig
    from alignment.seat.sft import run_sft

    path = _write_data(tmp_path / "data")
    lines = path.read_text().splitlines()
    (path.parent / "cot.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (path.parent / "selfeval.jsonl").write_text("\n".join(lines[2:]) + "\n")
    model_dir = make_tiny_vlm(tmp_path / "tiny", words=_words(read_vlm_jsonl(path)))
    cfg = SeatSFTConfig(data=str(path.parent), out=str(tmp_path / "out"), model=str(model_dir), vision=True,
                        lora_r=0, batch_size=2, epochs=1, lr=5e-3)
    report = run_sft(cfg, progress=False)
    assert report["vision"] and report["mix"] == {"cot": 2, "selfeval": 2} and report["steps"] == 2
    assert (tmp_path / "out" / "final").is_dir()
    with pytest.raises(ValueError, match="vision=true needs model"):
        SeatSFTConfig(vision=True).validate()
