"""Campaigns: the config file, every attack through real ART, on-device attacks through the emulated device,
--jobs and resume giving the same store as one uninterrupted job."""

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import tinyrobust
from tinyrobust.campaign import attacks
from tinyrobust.campaign.config import AttackSpec, Campaign, check, load_config, parse, to_toml
from tinyrobust.campaign.runner import Runner
from tinyrobust.campaign.store import Store
from tinyrobust.compile.model import compile_model
from tinyrobust.errors import UserError
from tinyrobust.evaluate import Settings
from tinyrobust.model import reference

# Parameters small enough that every attack runs on a few samples in seconds.
QUICK = {
    "bim": {"max_iter": 5},
    "pgd": {"max_iter": 5},
    "autoattack": {"max_iter": 5, "square_max_iter": 10},
    "cw_l2": {"binary_search_steps": 2, "max_iter": 5},
    "cw_linf": {"max_iter": 3, "initial_const": 1.0, "largest_const": 4.0},
    "deepfool": {"max_iter": 10},
    "ead": {"binary_search_steps": 1, "max_iter": 5, "initial_const": 1.0},  # one search step: start high
    "zoo": {"max_iter": 5},
    "square_linf": {"max_iter": 10},
    "square_l2": {"max_iter": 10},
    "boundary": {"max_iter": 3, "num_trial": 3, "sample_size": 3, "init_size": 10},
    "geoda": {"max_iter": 260},  # ART runs GeoDA with at least 250 queries
    "hopskipjump": {"max_iter": 2, "max_eval": 50, "init_eval": 10, "init_size": 10},
}


def device_rows(out):
    store = Store(out / "results.sqlite")
    rows = store.db.execute(
        "SELECT c.model, c.precision, c.attack, c.eps, c.mode, c.params, c.seed, d.sample, d.output, d.ticks "
        "FROM device d JOIN conditions c ON c.id = d.condition ORDER BY c.id, d.sample"
    ).fetchall()
    store.close()
    return rows


def test_config_errors_name_the_key_and_the_allowed_values():
    cases = [
        ({"model": ["digits-cnn"]}, "'model' is not a campaign setting; allowed keys here:"),
        ({"precisions": ["int4"]}, "'precisions' has 'int4'; allowed: int8, int16x8"),
        ({"board": "nope"}, "'board' is 'nope'; allowed: "),
        ({"samples": 0}, "'samples' must be a whole number of at least 1"),
        ({"attacks": [{"name": "fgsm2", "eps": [0.1]}]}, "'attacks[0].name' is 'fgsm2'; allowed: autoattack, bim"),
        ({"attacks": [{"name": "pgd"}]}, "'attacks[0].eps' is missing"),
        ({"attacks": [{"name": "pgd", "eps": [0.1], "mode": "on-device"}]}, "allowed: boundary, geoda, hopskipjump"),
        ({"attacks": [{"name": "pgd", "eps": [0.1], "mode": "live"}]}, "allowed: transfer, on-device"),
        ({"attacks": [{"name": "pgd", "eps": [0.1], "params": {"steps": 3}}]}, "its parameters are: eps_step_fraction"),
        ({"defenses": [{"name": "median", "where": "gpu"}]}, "'defenses[0].where' is 'gpu'; allowed: host, device"),
        ({"defenses": [{"name": "trades", "model": "m.h5"}]}, "'defenses[0].model' must be the path of a .tflite file"),
        ({"defenses": [{"name": "trades", "float_model": "{seed}.h5"}]}, "'defenses[0].float_model' has {seed} in"),
        ({"data": {"digits": "d.npz"}}, "'data.digits' names no model of the campaign; allowed: digits-cnn"),
    ]
    for config, message in cases:
        with pytest.raises(UserError) as error:
            parse(config)
        assert message in str(error.value), (config, str(error.value))
        assert str(error.value).count(";") <= 1


def test_bound_attacks_default_to_unbounded_and_the_shorthand_is_a_campaign(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('samples = 5\n[[attacks]]\nname = "deepfool"\n[[attacks]]\nname = "fgsm"\neps = [0.1, 0.2]\n')
    campaign = load_config(config)
    assert [(a.name, a.eps, a.mode) for a in campaign.attacks] == [
        ("deepfool", [0.0], "transfer"), ("fgsm", [0.1, 0.2], "transfer")
    ]  # fmt: skip
    shorthand = Settings(samples=5, attacks=["fgsm"], eps=[0.1, 0.2]).campaign()
    assert shorthand == Campaign(samples=5, attacks=[AttackSpec("fgsm", [0.1, 0.2])])
    assert Campaign.from_recorded(json.loads(json.dumps(campaign.recorded()))) == campaign


def test_campaign_cli_errors_are_one_sentence(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('precisions = ["int8", "int2"]\n')
    result = tinyrobust("campaign", "run", config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: campaign key 'precisions' has 'int2'; allowed: int8, int16x8"


@pytest.fixture(scope="module")
def digits_classifier(digits):
    """digits-cnn's float model for ART, over the range of its int8 input."""
    lo, hi = reference.dequantize(np.array([-128, 127]), compile_model(digits.tflite).input).tolist()
    return attacks.classifier(digits.keras, (lo, hi))


def test_every_attack_has_quick_parameters():
    assert set(QUICK) | {"fgsm", "jsma"} == set(attacks.ATTACKS)


def test_square_l2_refuses_images_smaller_than_its_first_tiles(digits, digits_classifier):
    x, y = digits.x_test[:2], digits.y_test[:2]
    with pytest.raises(UserError, match="square_l2 needs images at least 10 pixels on a side, and the model's are 8"):
        attacks.generate("square_l2", digits_classifier, x, y, 1.0, seed=0)


@pytest.mark.slow
def test_square_l2_moves_larger_images_and_fools_the_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])  # fmt: skip
    classifier = attacks.classifier(model, (0.0, 1.0))
    x = np.random.default_rng(0).uniform(0, 1, (8, 12, 12, 1)).astype(np.float32)
    y = classifier.predict(x).argmax(axis=1)  # the model's own answers are the labels it gets right
    x_adv = attacks.generate("square_l2", classifier, x, y, 2.0, seed=0, params={"max_iter": 20})
    delta = (x_adv - x).reshape(len(x), -1)
    assert np.all(np.isfinite(x_adv)) and np.abs(delta).max() > 1e-3
    assert np.all(np.linalg.norm(delta, axis=1) <= 2.0 + 1e-4)
    assert (classifier.predict(x_adv).argmax(axis=1) != y).any()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in attacks.ATTACKS if n != "square_l2"])
def test_every_attack_runs_through_art_within_its_eps_and_fools_the_float_model(name, digits, digits_classifier):
    spec, classifier = attacks.ATTACKS[name], digits_classifier
    lo, hi = classifier.clip_values
    x, y = digits.x_test[:6], digits.y_test[:6]
    eps = 0.1 if spec.norm == "inf" or spec.eps == "bound" else 1.0
    x_adv = attacks.generate(name, classifier, x, y, eps, seed=0, params=QUICK.get(name))
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.all(np.isfinite(x_adv)) and x_adv.min() >= lo and x_adv.max() <= hi
    delta = (x_adv - x).reshape(len(x), -1)
    bound = np.abs(delta).max(axis=1) if spec.norm == "inf" or spec.eps == "bound" else np.linalg.norm(delta, axis=1)
    assert np.all(bound <= eps + 1e-5), bound.max()
    assert np.abs(delta).max() > 1e-3, "the attack left every input as it was"
    if spec.eps == "bound":
        # The attack's own output (eps 0: unbounded), made again with the same seed, bounded is what eps gave.
        attacked = attacks.generate(name, classifier, x, y, 0.0, seed=0, params=QUICK.get(name))
        np.testing.assert_array_equal(x_adv, np.clip(attacked, x - eps, x + eps), "not repeatable for a seed")
    else:
        attacked = attacks.generate(name, classifier, x, y, eps, seed=0, params=QUICK.get(name))
        np.testing.assert_array_equal(x_adv, attacked, "not repeatable for a seed")
    right = classifier.predict(x).argmax(axis=1) == y
    assert right.sum() >= 4
    # Of the samples the float model gets right, the attack's output turns at least one.
    fooled = classifier.predict(attacked[right]).argmax(axis=1) != y[right]
    assert fooled.any(), "the attack turned none of the samples the float model gets right"


ON_DEVICE = Campaign(
    samples=12,
    attacks=[
        AttackSpec("fgsm", [0.1]),
        AttackSpec("square_linf", [0.15], "on-device", {"max_iter": 15}, max_queries=60),
        AttackSpec("boundary", [0.0], "on-device", QUICK["boundary"], max_queries=400),
    ],
)


@pytest.fixture(scope="module")
def on_device_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("one-job")
    return Runner(ON_DEVICE, out, jobs=1).run(progress=False), out


@pytest.mark.emulator
def test_on_device_attacks_query_the_device_within_their_budget(on_device_run):
    results, out = on_device_run
    runs = {(r["attack"], r["mode"]): r for r in results["runs"]}
    assert list(runs) == [("none", "transfer"), ("fgsm", "transfer"), ("square_linf", "on-device"),
                          ("boundary", "on-device")]  # fmt: skip
    for run in results["runs"]:
        assert run["samples"] == 12 and run["agreement"]["device_vs_tflm_bit_exact"] == 1.0
    for attack in ("square_linf", "boundary"):
        run = runs[(attack, "on-device")]
        spec = next(a for a in ON_DEVICE.attacks if a.name == attack)
        assert 12 <= run["queries"] <= spec.max_queries * 12, run["queries"]
        assert run["attack_success_rate"] is not None and run["distortion"]["l0"]["max"] > 0
    assert runs[("square_linf", "on-device")]["distortion"]["linf"]["max"] <= 0.15 + 1 / 255 + 1e-6
    assert runs[("boundary", "on-device")]["accuracy"]["device"] < runs[("none", "transfer")]["accuracy"]["device"]
    probe = runs[("square_linf", "on-device")]["gradient_probe"]
    assert probe["queries"] == 768 and [h["input_steps"] for h in probe["h"]][1:] == [1.0, 4.0]
    densities = [h["zero_density"] for h in probe["h"]]  # a step below the input's resolution changes nothing
    assert all(0 <= d <= 1 for d in densities) and densities[0] > 0.9 > densities[2]
    fgsm = runs[("fgsm", "transfer")]
    assert fgsm["transfer_rate"] is not None and 0 <= fgsm["attack_success_rate"] <= 1
    with open(out / "runs.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and table[2]["queries"] == str(runs[("square_linf", "on-device")]["queries"])
    assert (out / "builds.csv").is_file()
    with open(out / "on_device.csv") as f:
        probed = list(csv.DictReader(f))
    assert [r["attack"] for r in probed] == ["square_linf", "boundary"]
    assert float(probed[0]["zero gradients, h = 0.0001 (0.025 input steps)"]) == densities[0]
    report = (out / "report.html").read_text()
    assert "Robust accuracy on the device" in report and "adversarial-robustness-toolbox 1.20.1" in report


@pytest.mark.emulator
def test_two_jobs_and_a_resumed_run_store_what_one_job_stores(on_device_run, tmp_path):
    results, out = on_device_run
    expected = device_rows(out)
    two = tmp_path / "two-jobs"
    results_two = Runner(ON_DEVICE, two, jobs=2).run(progress=False)
    assert device_rows(two) == expected
    assert [r | {"queries": None} for r in results_two["runs"]] == [r | {"queries": None} for r in results["runs"]]
    assert [r.get("queries") for r in results_two["runs"]] == [r.get("queries") for r in results["runs"]]

    store = Store(two / "results.sqlite")  # lose the device's answers of half the samples, then resume
    with store.db:
        store.db.execute("DELETE FROM device WHERE sample % 2 = 1")
    store.close()
    Runner(ON_DEVICE, two, jobs=2).run(progress=False)
    assert device_rows(two) == expected

    with pytest.raises(UserError, match="another campaign"):
        Runner(Campaign(samples=3), two).run(progress=False)


@pytest.mark.emulator
def test_two_precisions_each_bit_exact_on_their_own_firmware(tmp_path):
    campaign = Campaign(
        precisions=["int8", "int16x8"], samples=8, attacks=[AttackSpec("pgd", [0.1], params={"max_iter": 3})]
    )
    results = Runner(campaign, tmp_path).run(progress=False)
    assert [(r["precision"], r["attack"]) for r in results["runs"]] == [
        ("int8", "none"), ("int8", "pgd"), ("int16x8", "none"), ("int16x8", "pgd")
    ]  # fmt: skip
    assert all(r["agreement"]["device_vs_tflm_bit_exact"] == 1.0 for r in results["runs"])
    assert [b["precision"] for b in results["builds"]] == ["int8", "int16x8"]
    assert all(b["latency"]["inferences"] == 16 for b in results["builds"])
    assert (tmp_path / "firmware" / "digits-cnn-int16x8" / "firmware.elf").is_file()


DEFENDED = parse({
    "samples": 10,
    "attacks": [{"name": "fgsm", "eps": [0.1]}],
    "defenses": [
        {"name": "median"},
        {"name": "squeeze-bits", "where": "device", "params": {"bit_depth": 3}},
        {"name": "pgd-training", "params": {"preset": "digits", "epochs": 1}},
    ],
})  # fmt: skip


@pytest.mark.emulator
def test_device_and_training_defenses_run_on_their_own_firmware(tmp_path, digits):
    from tinyrobust.compile.stages import apply_stages_q

    results = Runner(DEFENDED, tmp_path).run(progress=False)
    runs = {((r["defense"] or {}).get("name", ""), r["attack"]): r for r in results["runs"]}
    defenses = ("", "median", "squeeze-bits", "pgd-training")
    assert sorted(runs) == sorted((d, a) for d in defenses for a in ("none", "fgsm"))
    assert all(r["agreement"]["device_vs_tflm_bit_exact"] == 1.0 for r in results["runs"])
    builds = {b["defense"]: b for b in results["builds"]}
    assert list(builds) == [None, "squeeze-bits-device", "pgd-training"]
    assert len({b["sha256"] for b in builds.values()}) == 3
    assert builds["squeeze-bits-device"]["memory"]["code_bytes"] > builds[None]["memory"]["code_bytes"]
    for label in builds:
        assert (tmp_path / "firmware" / "-".join(filter(None, ("digits-cnn-int8", label))) / "firmware.elf").is_file()

    store = Store(tmp_path / "results.sqlite")
    sent = {}
    for defense in (None, "median", "squeeze-bits"):
        cid = next(c for c in store.db.execute("SELECT id, defense FROM conditions WHERE attack = 'fgsm'")
                   if (json.loads(c[1]) or {}).get("name") == defense)[0]  # fmt: skip
        sent[defense] = store.outputs(cid, np.int8, np.int8)
    store.close()
    # One FGSM attack serves every defense of the undefended float model: the device squeezes what it receives,
    # the host's median filter changes what is sent.
    np.testing.assert_array_equal(sent["squeeze-bits"]["input"], sent[None]["input"])
    assert not np.array_equal(sent["median"]["input"], sent[None]["input"])
    stages = [{"stage": "squeeze_bits", "bits": 3}]
    squeezed = apply_stages_q(sent["squeeze-bits"]["input"].reshape(-1, 8, 8, 1), stages)
    tflm = reference.tflm_outputs(digits.tflite, squeezed).reshape(10, -1)
    np.testing.assert_array_equal(sent["squeeze-bits"]["device"], tflm)
    assert not np.array_equal(sent["squeeze-bits"]["device"], sent[None]["device"])


@pytest.mark.parametrize(("config", "message"), [
    ({"defenses": [{"name": "no-such-defense"}]}, "unknown defense no-such-defense; choose from: "),
    ({"defenses": [{"name": "jpeg", "where": "device"}]}, "jpeg does not run on the device; these do: "),
    ({"defenses": [{"name": "trades", "where": "device"}]}, "trades trains a new model, so it has no place on"),
    ({"precisions": ["int16x8"], "defenses": [{"name": "median", "where": "device"}]}, "cannot go with int16x8"),
    ({"models": ["m.tflite"], "defenses": [{"name": "pixeldefend"}]}, "which m.tflite does not come with"),
    ({"defenses": [{"name": "randomized-smoothing"}]}, 'runs on the device only; give it where = "device"'),
    ({"defenses": [{"name": "randomized-smoothing", "where": "device", "params": {"sigma": 0}}]},
     "randomized-smoothing's sigma must be a positive number"),
    ({"defenses": [{"name": "randomized-smoothing", "where": "device", "params": {"n": 100000}}]},
     "randomized-smoothing's n must be a whole number from 1 to 65535 .the votes are 16-bit counts., not 100000"),
])  # fmt: skip
def test_defenses_are_checked_before_anything_runs(tmp_path, config, message):
    with pytest.raises(UserError, match=message):
        Runner(parse({"samples": 3, **config}), tmp_path).run(progress=False)
    assert not (tmp_path / "results.sqlite").exists()


@pytest.mark.emulator
def test_flash_and_evaluate_runs_randomized_smoothing_and_reports_votes_certificates_and_cost(tmp_path):
    """The command line's --defense, as a campaign's [[defenses]] table: the smoothing build's votes equal TFLM's on
    the same noisy copies (the bit-exactness check of this defense), and results.json, smoothing.csv and report.html
    show the smoothed accuracy, the certified radii and the cost against the undefended build."""
    out = tmp_path / "run"
    result = tinyrobust("flash-and-evaluate", "--samples", 5, "--attacks", "fgsm", "--eps", "0.1", "--defense",
                        "randomized-smoothing:where=device:sigma=0.25:n=24", "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["defenses"] == [
        {"name": "randomized-smoothing", "where": "device", "params": {"sigma": 0.25, "n": 24}}
    ]
    assert [b["defense"] for b in results["builds"]] == [None, "randomized-smoothing-device"]
    smoothed = [r for r in results["runs"] if r["defense"]]
    assert [r["attack"] for r in smoothed] == ["none", "fgsm"]
    assert all(r["agreement"]["device_vs_tflm_bit_exact"] == 1.0 for r in results["runs"])
    for r in smoothed:
        s = r["smoothing"]
        assert (s["sigma"], s["n"], s["alpha"]) == (0.25, 24, 0.001) and len(s["radius"]) == 5
        assert 0 <= s["accuracy"] <= r["accuracy"]["device"] and 0 <= s["radius_mean"] <= s["radius_largest"]
        assert set(s["certified_accuracy"]) == {"0.25", "0.5", "1"}
        assert s["cost"]["unit"] == "instructions" and 20 < s["cost"]["ratio"] < 30  # 24 copies and their noise
    store = Store(out / "results.sqlite")
    cid = store.condition("none", 0.0, defense=json.dumps(smoothed[0]["defense"], sort_keys=True))
    outputs = store.outputs(cid, np.uint16, np.int8)
    store.close()
    assert np.all(outputs["device"].sum(axis=1) == 24)  # the device answered with votes
    rows = list(csv.DictReader((out / "smoothing.csv").open()))
    assert [row["attack"] for row in rows] == ["none", "fgsm"] and rows[0]["votes = TFLM (bit-exact)"] == "1.0"
    assert "Randomized smoothing" in (out / "report.html").read_text()
    assert "smoothing sigma 0.25 n 24: smoothed accuracy" in result.stdout


def test_a_defense_on_the_command_line_is_a_campaigns_defenses_table(tmp_path):
    from tinyrobust.cli import _defense

    assert _defense("randomized-smoothing:where=device:sigma=0.5:n=64:seed=3") == {
        "name": "randomized-smoothing", "where": "device", "params": {"sigma": 0.5, "n": 64, "seed": 3}
    }  # fmt: skip
    assert _defense("jpeg:quality=30") == {"name": "jpeg", "params": {"quality": 30}}
    result = tinyrobust("flash-and-evaluate", "--defense", "randomized-smoothing:where=device:n=0", "--out", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: randomized-smoothing's n must be a whole number from 1 to 65535 (the "
                                     "votes are 16-bit counts), not 0")  # fmt: skip


@pytest.mark.emulator
def test_a_run_whose_model_changed_is_refused_before_its_firmware_is_built_again(digits, tmp_path):
    from tinyrobust.evaluate import flash_and_evaluate, resume_settings

    out = tmp_path / "run"
    flash_and_evaluate(Settings(samples=2, attacks=[], out=out), progress=False)
    store = Store(out / "results.sqlite")
    store.set_meta("model_sha256 digits-cnn int8", "0" * 64)  # as if the run had begun with another model
    store.close()
    elf = out / "firmware" / "firmware.elf"
    built = elf.stat().st_mtime_ns
    with pytest.raises(UserError, match="the model changed since the run"):
        flash_and_evaluate(resume_settings(out), progress=False)
    assert elf.stat().st_mtime_ns == built
    assert json.loads((out / "results.json").read_text())["runs"][0]["samples"] == 2  # the first run's, kept


# ---- the "David and Goliath" study as a config, and training defenses given as files ------------------------

STUDY = Path(__file__).resolve().parent.parent / "docs" / "david-and-goliath.toml"


def study_files(campaign: Campaign, root: Path, defenses: bool = True) -> None:
    """Empty stand-ins for every file and data set the study's config names, under root."""
    for model in campaign.models:
        (root / model).parent.mkdir(parents=True, exist_ok=True)
        (root / model).touch()
        (root / campaign.data_for(model)).mkdir(parents=True, exist_ok=True)
        for spec in campaign.defenses if defenses else []:
            for precision in campaign.precisions:
                for path in spec.files(Path(model).stem, precision):
                    if path is not None:
                        (root / path).touch()


def test_the_david_and_goliath_config_is_the_study_and_passes_the_check(tmp_path, monkeypatch):
    campaign = load_config(STUDY)
    assert [Path(m).stem for m in campaign.models] == ["resnet8-cifar10", "mobilenetv1-vww", "coffee-cnn"]
    assert campaign.precisions == ["int8", "int16x8"]
    assert {a.name for a in campaign.attacks} == {"pgd", "autoattack", "cw_l2", "cw_linf", "deepfool", "ead", "jsma",
                                                  "zoo", "square_linf", "square_l2", "boundary", "geoda"}  # fmt: skip
    assert {a.name for a in campaign.attacks if a.mode == "on-device"} == {"zoo", "square_linf", "square_l2",
                                                                            "boundary", "geoda"}  # fmt: skip
    assert [d.name for d in campaign.defenses] == ["feature-squeezing", "pixeldefend", "pgd-training", "distillation",
                                                   "ensemble-training", "sinkhorn-training"]  # fmt: skip
    assert all(d.given for d in campaign.defenses if d.trains)
    assert parse(tomllib.loads(to_toml(campaign.recorded()))) == campaign
    monkeypatch.chdir(tmp_path)  # the config's paths are relative to where the command runs
    study_files(campaign, tmp_path)
    check(campaign)


def test_the_study_without_its_files_is_refused_in_one_sentence(tmp_path):
    result = tinyrobust("campaign", "run", STUDY, "--out", "out", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: model file data/models/resnet8-cifar10.h5 does not exist; put the model "
                                     "there or correct its path in models")  # fmt: skip
    study_files(load_config(STUDY), tmp_path, defenses=False)  # the models and data sets, not the defenses' models
    result = tinyrobust("campaign", "run", STUDY, "--out", "out", cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == (
        "error: data/models/resnet8-cifar10-pgd-training.h5 does not exist (defense pgd-training's float_model for "
        "resnet8-cifar10 int8); put the trained model there, or leave out model and float_model to train the defense "
        "here"
    )
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_a_training_defense_given_as_files_is_loaded_instead_of_trained(digits, tmp_path, monkeypatch):
    from tinyrobust.campaign import builds, defenses
    from tinyrobust.campaign.config import DefenseSpec

    monkeypatch.setattr(defenses.Configured, "train", lambda *args, **kwargs: pytest.fail("trained"))
    digits.keras.save(tmp_path / "digits-cnn-pgd.keras")
    (tmp_path / "digits-cnn-pgd-int8.tflite").write_bytes(digits.tflite)
    spec = DefenseSpec("pgd-training", model=f"{tmp_path}/{{model}}-pgd-{{precision}}.tflite",
                       float_model=f"{tmp_path}/{{model}}-pgd.keras")  # fmt: skip
    model = builds.model_for(digits, "int8", spec, seed=0)
    assert model.tflite == digits.tflite and model.keras is not digits.keras
    for a, b in zip(model.keras.get_weights(), digits.keras.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    quantized = builds.model_for(digits, "int8", DefenseSpec("pgd-training", float_model=spec.float_model), seed=0)
    assert compile_model(quantized.tflite).input.type_name == "int8"  # the float model quantized as a retrained one

    for config, message in [
        ({"precisions": ["int16x8"], "defenses": [{"name": "pgd-training", "model": f"{tmp_path}/{{model}}-pgd-int8"
                                                   ".tflite"}]}, "is int8, not int16x8"),
        ({"defenses": [{"name": "median", "float_model": spec.float_model}]}, "trains no model, so it takes no model"),
        ({"models": [f"{tmp_path}/digits-cnn-pgd-int8.tflite"], "defenses": [{"name": "pgd-training", "float_model":
          spec.float_model}]}, "give its .tflite too, with model"),
    ]:  # fmt: skip
        with pytest.raises(UserError, match=message) as error:
            check(parse(config))
        assert str(error.value).count(";") == 1
    check(parse({"defenses": [{"name": "pgd-training", "model": spec.model, "float_model": spec.float_model}]}))


@pytest.mark.emulator
def test_a_campaign_runs_a_given_training_defense_as_given(digits, tmp_path):
    from tinyrobust.report.html import defense_label

    digits.keras.save(tmp_path / "digits-cnn-pgd.keras")
    (tmp_path / "digits-cnn-pgd-int8.tflite").write_bytes(digits.tflite)  # the undefended model, to compare with
    given = {"name": "pgd-training", "model": f"{tmp_path}/{{model}}-pgd-{{precision}}.tflite",
             "float_model": f"{tmp_path}/{{model}}-pgd.keras"}  # fmt: skip
    campaign = parse({"samples": 5, "attacks": [{"name": "fgsm", "eps": [0.1]}], "defenses": [given]})
    results = Runner(campaign, tmp_path / "run").run(progress=False)
    assert [b["defense"] for b in results["builds"]] == [None, "pgd-training"]
    assert results["builds"][0]["sha256"] == results["builds"][1]["sha256"]
    runs = {(defense_label(r["defense"]), r["attack"]): r for r in results["runs"]}
    assert sorted(runs) == [(d, a) for d in ("none", "pgd-training (given)") for a in ("fgsm", "none")]
    for attack in ("none", "fgsm"):  # the same model and float model: the same inputs and answers
        assert runs[("pgd-training (given)", attack)]["accuracy"] == runs[("none", attack)]["accuracy"]
