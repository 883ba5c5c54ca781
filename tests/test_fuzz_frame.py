"""The firmware's frame parser under libFuzzer with AddressSanitizer, from a seed corpus, bounded."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyrobust.assets import FIRMWARE
from tinyrobust.device.link import MSG_INFER, MSG_INFO, MSG_SESSION, encode_frame

RUNS = 1_000_000


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang (libFuzzer) is not installed; ./install.sh adds it")
def test_frame_parser_survives_fuzzing(tmp_path):
    fuzzer = tmp_path / "frame_fuzzer"
    link = FIRMWARE / "link"
    subprocess.run(
        ["clang", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", f"-I{link}", str(link / "tr_frame.c"),
         str(Path(__file__).parent / "fuzz" / "frame_fuzzer.c"), "-o", str(fuzzer)],
        check=True,
    )  # fmt: skip
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = {
        "info": bytes([64]) + encode_frame(MSG_INFO, 1),
        "infer": bytes([64]) + encode_frame(MSG_INFER, 2, bytes(range(64))),
        "session": bytes([8]) + encode_frame(MSG_SESSION, 3, b"\x01\x02\x03\x04"),
        "oversize": bytes([8]) + encode_frame(MSG_INFER, 4, b"x" * 20),
        "garbage-then-frame": bytes([16]) + b"\xa5\xa5\x5a\x00" + encode_frame(MSG_INFER, 5, b"abc"),
    }
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)
    artifacts = tmp_path / "findings"
    artifacts.mkdir()
    result = subprocess.run(
        [str(fuzzer), str(corpus), f"-runs={RUNS}", "-max_len=512", "-print_final_stats=1",
         f"-artifact_prefix={artifacts}/"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    findings = list(artifacts.iterdir())
    assert result.returncode == 0 and not findings, result.stderr[-3000:]
    executed = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", result.stderr).group(1))
    assert executed >= RUNS
