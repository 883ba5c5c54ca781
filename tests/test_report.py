"""The report and its CSV tables: attacks x defenses, disagreement, boundary distance, examples, provenance."""

import base64
import csv
import json
import re
import tomllib

import numpy as np
import pytest

from tinyrobust.campaign import metrics
from tinyrobust.campaign.config import AttackSpec, Campaign, DefenseSpec, parse, to_toml
from tinyrobust.campaign.runner import Runner
from tinyrobust.compile.graph import Tensor
from tinyrobust.device.boards import load_board
from tinyrobust.device.counter import latency
from tinyrobust.report import html as report

MEDIAN = {"name": "median", "where": "host", "params": {}}
SQUEEZE = {"name": "squeeze-bits", "where": "host", "params": {"bit_depth": 4}}


def run(attack, eps, defense=None, seed=0, device=0.5, boundary=None, mode="transfer"):
    row = {
        "model": "digits-cnn", "precision": "int8", "attack": attack, "eps": eps, "mode": mode, "defense": defense,
        "seed": seed, "params": {}, "samples": 10,
        "accuracy": {"float": 0.6, "tflite": device, "tflm": device, "device": device},
        "agreement": {"device_vs_tflm_bit_exact": 1.0, "device_vs_tflite_top1": 0.9, "tflite_vs_tflm_bit_exact": 0.9},
        "disagreement": {
            "device_vs_float": {"rate": 0.2, "samples": 2, "device_margin_mean": 0.05},
            "device_vs_tflite": {"rate": 0.0, "samples": 0, "device_margin_mean": None},
        },
        "attack_success_rate": None if attack == "none" else 0.5, "transfer_rate": None,
        "distortion": None,
    }  # fmt: skip
    if boundary is not None:
        row["boundary"] = boundary
    return row


BOUNDARY = {
    "samples": 10, "perturbed": 9,
    "float": {"samples": 6, "t": {"mean": 0.9, "median": 0.95}, "l2": {"mean": 0.4, "median": 0.41},
              "linf": {"mean": 0.2, "median": 0.18}},
    "quantized": {"samples": 7, "t": {"mean": 0.8, "median": 0.85}, "l2": {"mean": 0.35, "median": 0.36},
                  "linf": {"mean": 0.17, "median": 0.16}},
    "both": {"samples": 5, "float_l2": {"mean": 0.4, "median": 0.4}, "quantized_l2": {"mean": 0.3, "median": 0.3},
             "quantized_closer": 0.8},
}  # fmt: skip


def image_examples(attack, eps, defense=None):
    tensor = Tensor(0, "input", (1, 8, 8, 1), "INT8", np.array([1 / 255], np.float32), np.array([-128]))
    rng = np.random.default_rng(1)
    clean_q = rng.integers(-128, 128, (4, 64)).astype(np.int8)
    adv_q = np.clip(clean_q.astype(int) + rng.integers(-20, 21, clean_q.shape), -128, 127).astype(np.int8)
    labels = np.array([1, 2, 3, 4])
    device = np.eye(10, dtype=np.int8)[[1, 2, 3, 4]] * 100
    turned = np.eye(10, dtype=np.int8)[[7, 2, 3, 4]] * 100
    shown = metrics.examples({"labels": labels, "input": adv_q, "device": turned},
                             {"labels": labels, "input": clean_q, "device": device}, tensor)  # fmt: skip
    return {"model": "digits-cnn", "precision": "int8", "attack": attack, "eps": eps, "mode": "transfer",
            "defense": defense, **shown}  # fmt: skip


def results_with(runs, campaign: Campaign | None = None, examples=()):
    campaign = campaign or Campaign(samples=10, seeds=[0, 1])
    return {
        "tinyrobust_version": "0.1.0",
        "model": {"name": "digits-cnn", "sha256": "ab" * 32, "input": {}, "operators": {"CONV_2D": 2}},
        "board": {"name": "qemu-mps2-an386", "core": "cortex-m4", "fpu": True, "emulated": True},
        "memory": {"flash_bytes": 10000, "code_bytes": 6000, "weights_bytes": 4000, "ram_bytes": 9000,
                   "arena_bytes": 2000},
        "latency": {"unit": "instructions", "source": "SysTick", "inferences": 10,
                    "per_inference": {"median": 1e6, "min": 1e6, "max": 1e6}},
        "builds": [{"model": "digits-cnn", "precision": "int8", "defense": None, "sha256": "ab" * 32}],
        "runs": runs, "examples": list(examples), "link": {"retransmissions": 0},
        "settings": campaign.recorded(), "campaign": campaign.recorded(), "seeds": campaign.seeds,
        "versions": {"tinyrobust": "0.1.0", "adversarial-robustness-toolbox": "1.20.1"}, "jobs": 1, "notes": [],
        "host": {"python": "3.11.7", "machine": "x86_64"}, "wall_seconds": 12.5,
    }  # fmt: skip


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_heatmap_is_attacks_by_defenses_averaged_over_seeds(tmp_path):
    runs = [
        run("none", 0.0, device=0.9), run("none", 0.0, seed=1, device=0.8),
        run("fgsm", 0.1, device=0.2), run("fgsm", 0.1, seed=1, device=0.4),
        run("none", 0.0, MEDIAN, device=0.7), run("fgsm", 0.1, MEDIAN, device=0.5),
        run("deepfool", 0.0, SQUEEZE, device=0.3),
        run("boundary", 0.0, mode="on-device", device=0.1),
    ]  # fmt: skip
    table = report.heatmap(results_with(runs))
    assert table["defenses"] == ["none", "median (host)", "squeeze-bits (host, bit_depth=4)"]
    labels = [report.attack_label(r) for r in table["rows"]]
    assert labels == ["clean", "fgsm eps 0.1", "deepfool unbounded", "boundary unbounded on-device"]
    clean, fgsm, deepfool, boundary = table["rows"]
    assert clean["none"] == pytest.approx(0.85) and fgsm["none"] == pytest.approx(0.3)
    assert fgsm["median (host)"] == 0.5 and deepfool["none"] is None and boundary["none"] == 0.1
    assert deepfool["squeeze-bits (host, bit_depth=4)"] == 0.3

    report.write_csv(results_with(runs), tmp_path)
    written = read_csv(tmp_path / "heatmap.csv")
    assert list(written[0]) == table["columns"]
    assert written[2]["attack"] == "deepfool" and written[2]["none"] == "" and float(written[1]["none"]) == fgsm["none"]
    assert not (tmp_path / "boundary.csv").exists()  # no minimal-perturbation attack measured


def test_report_shows_every_section_and_writes_every_table_as_csv(tmp_path):
    runs = [run("none", 0.0, device=0.9), run("fgsm", 0.1, device=0.3), run("deepfool", 0.0, boundary=BOUNDARY),
            run("none", 0.0, MEDIAN), run("deepfool", 0.0, MEDIAN, boundary=BOUNDARY)]  # fmt: skip
    shown = [image_examples("fgsm", 0.1), image_examples("deepfool", 0.0), image_examples("deepfool", 0.0, MEDIAN)]
    campaign = Campaign(samples=10, seeds=[0, 1], attacks=[AttackSpec("fgsm", [0.1]), AttackSpec("deepfool", [0.0])],
                        defenses=[DefenseSpec("median")])  # fmt: skip
    results = results_with(runs, campaign, shown)
    report.write_report(results, tmp_path / "report.html")
    report.write_csv(results, tmp_path)
    html = (tmp_path / "report.html").read_text()

    for heading in ("Attacks x defenses", "Disagreement analysis", "Distance to the decision boundary",
                    "Examples of adversarial inputs", "What produced these results"):  # fmt: skip
        assert f"<h2>{heading}" in html, heading
    images = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    alts = [alt for alt, _ in images]
    for alt in ("attacks x defenses heat map", "disagreement", "distance to the decision boundary"):
        assert alt in alts
    assert alts.count("adversarial examples") == 2  # no defense, then median in a <details>
    assert all(base64.b64decode(png)[:4] == b"\x89PNG" for _, png in images)

    # Every table named in the report is a CSV file, with the rows the report shows.
    named = re.findall(r"CSV: <code>(\w+)\.csv</code>", html)
    assert set(named) >= {"runs", "heatmap", "disagreement", "boundary", "provenance"}
    assert all((tmp_path / f"{name}.csv").is_file() for name in named)
    boundary = read_csv(tmp_path / "boundary.csv")
    assert [(r["attack"], r["defense"]) for r in boundary] == [("deepfool", "none"), ("deepfool", "median (host)")]
    assert boundary[0]["float: l2 median"] == "0.41" and boundary[0]["quantized: l2 median"] == "0.36"
    assert boundary[0]["both: quantized closer"] == "0.8"
    disagreement = read_csv(tmp_path / "disagreement.csv")
    assert len(disagreement) == 5 and disagreement[1]["vs float: rate"] == "0.2"
    runs_csv = read_csv(tmp_path / "runs.csv")
    assert runs_csv[2]["boundary.quantized.l2.median"] == "0.36" and "examples" not in html.split("<h2>")[0]

    provenance = {r["item"]: r["value"] for r in read_csv(tmp_path / "provenance.csv")}
    assert provenance["adversarial-robustness-toolbox"] == "1.20.1" and provenance["seeds"] == "0, 1"
    assert provenance["model SHA-256 digits-cnn int8"] == "ab" * 32
    assert "adversarial-robustness-toolbox 1.20.1" in html and "[[defenses]]" in html


def test_result_cards_state_their_threat_model_and_count_the_worst_case_per_sample(tmp_path):
    from tinyrobust.campaign import cards

    labels = np.arange(10)

    def outputs(right):  # the device's outputs, right on the given samples
        return {"labels": labels, "device": np.eye(10)[np.where(right, labels, (labels + 1) % 10)]}

    first = lambda n: np.arange(10) < n  # noqa: E731
    runs = [run("none", 0.0, device=0.9), run("pgd", 0.1, device=0.6),
            run("square_linf", 0.1, mode="on-device", device=0.6), run("deepfool", 0.0, device=0.1),
            run("none", 0.0, MEDIAN, device=0.8), run("pgd", 0.1, MEDIAN, device=0.7)]  # fmt: skip
    runs[1]["params"] = runs[5]["params"] = {"max_iter": 5}
    runs[2]["queries"] = 2500
    rights = [first(9), first(6), ~first(3) & first(9), first(1), first(8), first(7)]
    worst = cards.WorstCase()
    for row, right in zip(runs, rights, strict=True):
        worst.add(row, outputs(right))
    specs = [AttackSpec("pgd", [0.1], params={"max_iter": 5}), AttackSpec("square_linf", [0.1], "on-device",
             max_queries=300), AttackSpec("deepfool", [0.0])]  # fmt: skip
    int8 = cards.CardInput(dtype="int8", scale=1 / 255, zero_point=-128, range=[0.0, 1.0])
    inputs = {cards.key("digits-cnn", "int8", d): int8 for d in (None, MEDIAN)}
    found = cards.cards(runs, worst, inputs, specs, "1.20.1")

    plain, median = found
    assert (plain["defense"], median["defense"]) == (None, MEDIAN)
    threat = plain["threat_model"]
    assert threat["input"]["range"] == [0.0, 1.0] and threat["samples"] == 10 and threat["seeds"] == [0]
    assert threat["art_version"] == "1.20.1"
    pgd, square, deepfool = threat["attacks"]
    assert pgd["eps"] == [{"eps": 0.1, "norm": "Linf", "steps": pytest.approx(25.5)}]
    assert pgd["params"] == {"eps_step_fraction": 0.25, "max_iter": 5, "num_random_init": 1, "batch_size": 128}
    assert (square["mode"], square["max_queries"], pgd["max_queries"]) == ("on-device", 300, None)
    assert deepfool["eps"] == [{"eps": 0.0, "norm": "unbounded", "steps": None}] and deepfool["attack_norm"] == "L2"
    assert plain["clean"]["float"] == 0.6 and plain["clean"]["device"] == 0.9
    assert [(r["attack"], r["device"], r["queries_per_sample"]) for r in plain["robust"]] == [
        ("pgd", 0.6, None), ("square_linf", 0.6, 250.0), ("deepfool", 0.1, None)]  # fmt: skip
    # Right under PGD on samples 0-5 and under Square on 3-8: robust to both on 3, 4 and 5 only.
    linf, unbounded = plain["worst_case"]
    assert (linf["norm"], linf["eps"], linf["attacks"]) == ("Linf", 0.1, ["pgd", "square_linf on-device"])
    assert linf["device"] == pytest.approx(0.3) and (unbounded["norm"], unbounded["device"]) == ("unbounded", 0.1)
    assert plain["device_vs_tflm_bit_exact"] == 1.0 and plain["inferences"] == 40

    results = results_with(runs, Campaign(samples=10, attacks=specs, defenses=[DefenseSpec("median")]))
    results["cards"] = found
    report.write_csv(results, tmp_path)
    report.write_report(results, tmp_path / "report.html")
    board = read_csv(tmp_path / "cards.csv")
    assert [(r["defense"], r["clean device"], r["pgd Linf eps 0.1"], r["worst case Linf eps 0.1"]) for r in board] == [
        ("none", "0.9", "0.6", "0.3"), ("median (host)", "0.8", "0.7", "0.7")]  # fmt: skip
    assert board[0]["square_linf on-device Linf eps 0.1"] == "0.6" and board[1]["deepfool unbounded"] == ""
    assert board[0]["device = TFLM (bit-exact)"] == "1.0" and board[0]["input range"] == "[0, 1]"
    threats = read_csv(tmp_path / "threat_model.csv")
    assert [(t["attack"], t["eps (input units)"], t["eps (input steps)"], t["defenses"]) for t in threats] == [
        ("pgd", "0.1", "25.5", "none, median (host)"), ("square_linf", "0.1", "25.5", "none"),
        ("deepfool", "0", "-", "none")]  # fmt: skip
    assert threats[1]["max queries per sample"] == "300" and threats[1]["queries made per sample"] == "250.0"
    html = (tmp_path / "report.html").read_text()
    assert html.index("<h2>Result cards") < html.index("<h2>Accuracy under attack")
    assert "CSV: <code>cards.csv</code>" in html and "CSV: <code>threat_model.csv</code>" in html


def test_the_reported_config_runs_the_same_campaign():
    campaign = parse({
        "samples": 30, "seeds": [0, 3], "precisions": ["int8", "int16x8"],
        "attacks": [{"name": "pgd", "eps": [0.05, 0.1], "params": {"max_iter": 5, "num_random_init": 2}},
                    {"name": "deepfool"},
                    {"name": "square_linf", "eps": [0.1], "mode": "on-device", "max_queries": 300}],
        "defenses": [{"name": "median", "params": {"window_size": 3}}, {"name": "squeeze-bits", "where": "device"}],
    })  # fmt: skip
    text = to_toml(campaign.recorded())
    assert parse(tomllib.loads(text)) == campaign
    assert parse(tomllib.loads(to_toml(Campaign().recorded()))) == Campaign()


@pytest.mark.emulator
def test_a_campaign_reports_boundary_distances_and_examples(tmp_path):
    campaign = Campaign(
        samples=10,
        attacks=[AttackSpec("fgsm", [0.1]), AttackSpec("deepfool", [0.0], params={"max_iter": 10})],
        defenses=[DefenseSpec("median")],
    )
    results = Runner(campaign, tmp_path).run(progress=False)
    rows = {(r["attack"], report.defense_label(r["defense"])): r for r in results["runs"]}
    assert set(rows) == {(a, d) for a in ("none", "fgsm", "deepfool") for d in ("none", "median (host)")}
    for defense in ("none", "median (host)"):
        assert "boundary" not in rows[("fgsm", defense)] and "boundary" not in rows[("none", defense)]
        boundary = rows[("deepfool", defense)]["boundary"]
        assert boundary["samples"] == 10 and boundary["quantized"]["samples"] >= 1, boundary
        for model in ("float", "quantized"):
            if boundary[model]["samples"]:
                assert 0 < boundary[model]["linf"]["median"] <= boundary[model]["l2"]["median"]
    shown = {(e["attack"], report.defense_label(e["defense"])) for e in results["examples"]}
    assert shown == {(a, d) for a in ("fgsm", "deepfool") for d in ("none", "median (host)")}
    assert all(1 <= len(e["samples"]) <= metrics.EXAMPLES for e in results["examples"])

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"] == results["runs"] and (tmp_path / "results.json").stat().st_size < 100_000
    html = (tmp_path / "report.html").read_text()
    assert "Distance to the decision boundary" in html and 'alt="adversarial examples"' in html
    assert len(read_csv(tmp_path / "boundary.csv")) == 2 and len(read_csv(tmp_path / "heatmap.csv")) == 3

    # One card per defense, its threat model from the build: int8 steps of 1/255 in [0, 1].
    assert [report.defense_label(c["defense"]) for c in results["cards"]] == ["none", "median (host)"]
    for card in results["cards"]:
        same = [r for r in results["runs"] if r["defense"] == card["defense"]]
        assert card["threat_model"]["input"] == {"dtype": "int8", "scale": pytest.approx(1 / 255), "zero_point": -128,
                                                 "range": [0.0, 1.0]}  # fmt: skip
        fgsm = next(a for a in card["threat_model"]["attacks"] if a["attack"] == "fgsm")
        assert fgsm["eps"] == [{"eps": 0.1, "norm": "Linf", "steps": pytest.approx(25.5)}]
        assert card["clean"]["device"] == next(r["accuracy"]["device"] for r in same if r["attack"] == "none")
        linf = next(w for w in card["worst_case"] if w["norm"] == "Linf")
        assert linf["attacks"] == ["fgsm"] and linf["device"] == next(r["accuracy"]["device"] for r in same
                                                                      if r["attack"] == "fgsm")  # fmt: skip
        assert card["device_vs_tflm_bit_exact"] == 1.0 and card["inferences"] == 30
    assert len(read_csv(tmp_path / "cards.csv")) == 2 and len(read_csv(tmp_path / "threat_model.csv")) == 2


# ---- split-evaluate's report ----------------------------------------------------------------------------------


def split_condition(kind, name, beta, sizes, accuracy, clean=None, eps=0.0, severity=None, exact=1.0):
    """A condition as split.evaluate writes it, its summary made from the given per-sample sizes."""
    mean = float(np.mean(sizes))
    return {
        "severity": severity, "kind": kind, "name": name, "eps": eps, "beta": beta, "entropy_model": "factorized",
        "samples": round(len(sizes) / exact),
        "bytes": {"mean": mean, "median": float(np.median(sizes)), "max": float(max(sizes))},
        "bytes_per_sample": sizes, "ideal_bytes_mean": mean - 3.5, "accuracy": accuracy, "round_trip_exact": exact,
        "overhead_vs_clean": mean / clean - 1 if clean else 0.0,
    }  # fmt: skip


def split_results() -> dict:
    """Two betas, each with clean inputs, the three attacks, two corruptions and the defense; one corruption of
    beta 0.1 has a stream that did not decode."""
    c = split_condition
    e8, e32 = 8 / 255, 32 / 255
    conditions = [
        c("clean", "clean", 0.01, [236, 238, 240, 236], 0.97),
        c("attack", "entropy", 0.01, [244, 244, 244, 244], 0.95, 237.5, e8),
        c("attack", "accuracy", 0.01, [237, 238, 237, 238], 0.40, 237.5, e8),
        c("noise", "sign noise", 0.01, [236, 236, 237, 237], 0.97, 237.5, e8),
        c("attack", "entropy", 0.01, [262, 262, 263, 263], 0.93, 237.5, e32),
        c("attack", "accuracy", 0.01, [238, 239, 238, 239], 0.02, 237.5, e32),
        c("noise", "sign noise", 0.01, [235, 235, 236, 236], 0.96, 237.5, e32),
        c("corruption", "snow", 0.01, [250, 251, 252, 253], 0.80, 237.5, severity=1),
        c("corruption", "snow", 0.01, [267, 268, 268, 269], 0.40, 237.5, severity=5),
        c("corruption", "contrast", 0.01, [222, 222, 223, 223], 0.90, 237.5, severity=1),
        c("corruption", "contrast", 0.01, [221, 221, 222, 222], 0.70, 237.5, severity=5),
        c("defense", "defended clean", 0.01, [234, 234, 234, 234], 0.96, 237.5),
        c("defense", "defended entropy", 0.01, [253, 254, 253, 254], 0.95, 237.5, e32),
        c("clean", "clean", 0.1, [104, 106, 105, 107], 0.97),
        c("attack", "entropy", 0.1, [108, 108, 109, 109], 0.97, 105.5, e8),
        c("attack", "accuracy", 0.1, [105, 105, 105, 105], 0.50, 105.5, e8),
        c("noise", "sign noise", 0.1, [105, 105, 106, 106], 0.97, 105.5, e8),
        c("attack", "entropy", 0.1, [118, 119, 119, 120], 0.96, 105.5, e32),
        c("attack", "accuracy", 0.1, [105, 106, 105, 106], 0.01, 105.5, e32),
        c("noise", "sign noise", 0.1, [104, 104, 105, 105], 0.97, 105.5, e32),
        c("corruption", "snow", 0.1, [115, 116, 117], 0.70, 105.5, severity=1, exact=0.75),
        c("corruption", "snow", 0.1, [125, 126, 127, 128], 0.30, 105.5, severity=5),
        c("corruption", "contrast", 0.1, [92, 92, 93, 93], 0.80, 105.5, severity=1),
        c("corruption", "contrast", 0.1, [91, 91, 92, 92], 0.60, 105.5, severity=5),
        c("defense", "defended clean", 0.1, [104, 104, 105, 105], 0.97, 105.5),
        c("defense", "defended entropy", 0.1, [116, 116, 117, 117], 0.96, 105.5, e32),
    ]
    coder = [
        {"beta": 0.01, "symbols_per_inference": 512, "head_instructions": 890440.0, "coder_instructions": 17480.0,
         "instructions_per_symbol": 34.140625, "coder_share_of_head": 0.0196, "table_flash_bytes": 5704,
         "flash_bytes": 14216},
        {"beta": 0.1, "symbols_per_inference": 512, "head_instructions": 886360.0, "coder_instructions": 16320.0,
         "instructions_per_symbol": 31.875, "coder_share_of_head": 0.0184, "table_flash_bytes": 1768,
         "flash_bytes": 10280},
    ]  # fmt: skip
    return {
        "model": "split-digits", "data_set": "sklearn-digits-32", "board": "qemu-mps2-an386",
        "unit": "instructions (emulated)",
        "settings": {"model": "split-digits", "samples": 4, "iterations": 20, "eot": 16, "seed": 0},
        "conditions": conditions, "coder": coder, "wall_seconds": 61.2,
    }  # fmt: skip


def split_rows(html: str, heading: str) -> list[str]:
    """The text of each row of the first table after the heading, its cells joined with " | "."""
    table = html.split(f"<h2>{heading}</h2>")[1].split("</table>")[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in table.split("<tr>")[2:]]
    return [" | ".join(" ".join(cell.split()) for cell in row) for row in cells]


def test_the_split_report_shows_the_summary_the_figures_and_the_coder_of_each_beta(tmp_path, monkeypatch):
    from tinyrobust.report import split

    titles = []
    embed = split._png

    def recording(fig):
        titles.append(fig.get_suptitle())
        return embed(fig)

    monkeypatch.setattr(split, "_png", recording)
    split.write_split_report(split_results(), tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()

    images = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert [alt for alt, _ in images] == ["bytes per inference by condition kind", "overhead vs eps",
                                          "corruption heat map", "accuracy vs bytes"]  # fmt: skip
    assert all(base64.b64decode(png)[:4] == b"\x89PNG" for _, png in images)
    # Every figure names the data set it was measured on, the model and the board.
    assert len(titles) == 4 and all("split-digits on sklearn-digits-32, qemu-mps2-an386" in t for t in titles)

    beta_01, beta_1 = split_rows(html, "Summary")
    assert beta_01 == (
        "0.01 | 237.5 | 0.97 | +10.5% at 32/255 (accuracy 0.93) | +0.4% at 32/255 (accuracy 0.02) | "
        "-0.4% at 8/255 (accuracy 0.97) | +12.8% (snow, severity 5) | -1.5% (accuracy 0.96 against 0.97) | "
        "+6.7% against +10.5% undefended at 32/255 (accuracy 0.95 against 0.93) | 1.000"
    )
    assert beta_1.startswith("0.1 | 105.5 | 0.97 | +12.8% at 32/255 (accuracy 0.96) | ")
    assert "+19.9% (snow, severity 5)" in beta_1 and beta_1.endswith(" | 0.750")
    assert '<td class="bad">0.750</td>' in html  # a stream that did not decode is a failure, shown as one
    coder = split_rows(html, "The coder on the device")
    assert coder == [
        "0.01 | 512 | 890,440 | 17,480 | 34.1 | 2.0% | 5,704 | 14,216",
        "0.1 | 512 | 886,360 | 16,320 | 31.9 | 1.8% | 1,768 | 10,280",
    ]
    assert "head, instructions (emulated)" in html and "<code>sklearn-digits-32</code>" in html


def test_a_split_report_of_results_without_per_sample_bytes_says_why_a_figure_is_missing(tmp_path):
    from tinyrobust.report import split

    results = split_results()
    for condition in results["conditions"]:
        del condition["bytes_per_sample"]
    split.write_split_report(results, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3 and "no per-sample byte counts" in html


def test_the_report_shows_the_energy_estimate_beside_the_latency(tmp_path):
    results = results_with([run("none", 0.0, device=0.9)])
    results["latency"] = latency(load_board("qemu-mps2-an386"), [6930] * 10)
    report.write_report(results, tmp_path / "report.html")
    section = (tmp_path / "report.html").read_text().split("<h2>Latency</h2>")[1].split("<h2>")[0]
    energy = results["latency"]["energy"]
    assert f"Energy per inference (estimate): {energy['estimate_uj']:,.1f} µJ at the median count." in section
    assert energy["basis"] in section and "DS8626 Rev 12, Table 20" in section
