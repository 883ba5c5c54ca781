"""Split networks run as campaigns run: split-evaluate on several emulators, or interrupted and resumed, measures
what one uninterrupted emulator measures; a campaign's [split] section runs in the campaign's store, resumably."""

import json
import shutil
import signal
import sqlite3
import subprocess
import time
import tomllib

import pytest

from conftest import TINYROBUST, interruptible, tinyrobust
from tinyrobust.campaign.config import Campaign, parse, to_toml
from tinyrobust.campaign.runner import Runner
from tinyrobust.campaign.store import Store
from tinyrobust.errors import UserError
from tinyrobust.model import zoo

FIRST_BETA = zoo.builtin_spec("split-digits")["split"]["betas"][0]  # the other split tests train it too

# A tiny run with every kind of condition: clean, an attack, noise, a corruption, the host's and the device's
# defenses with their adaptive attacks (14 conditions).
TINY = ["--beta", FIRST_BETA, "--samples", 4, "--eps", "8/255", "--attacks", "entropy,noise", "--iterations", 2,
        "--eot", 1, "--corruptions", "snow", "--device-defense", "median:k=3"]  # fmt: skip
TINY_SPLIT = {"betas": [FIRST_BETA], "samples": 4, "eps": [8 / 255], "attacks": ["entropy", "noise"], "iterations": 2,
              "eot": 1, "corruptions": ["snow"], "device_defense": [{"stage": "median", "k": 3}]}  # fmt: skip
CONDITIONS = 14


def measured(out) -> dict:
    """results.json's conditions and coder cost, which do not depend on how the run was carried out."""
    results = json.loads((out / "results.json").read_text())
    return {"conditions": results["conditions"], "coder": results["coder"]}


def stored(out, run="split-evaluate") -> int:
    if not (out / "results.sqlite").is_file():  # connecting would create it, and the run would find it taken
        return 0
    db = sqlite3.connect(out / "results.sqlite")
    try:
        return db.execute("SELECT count(*) FROM split_conditions WHERE run = ?", (run,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def forget_last(out, count: int, run="split-evaluate", results=None) -> None:
    """Lose the last conditions the run stored, as if it had been stopped before measuring them, and its results
    (in results, when not in out)."""
    store = Store(out / "results.sqlite")
    with store.db:
        store.db.execute("DELETE FROM split_conditions WHERE rowid IN (SELECT rowid FROM split_conditions "
                         "WHERE run = ? ORDER BY rowid DESC LIMIT ?)", (run, count))  # fmt: skip
    store.close()
    ((results or out) / "results.json").unlink()


@pytest.fixture(scope="module")
def one_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "one-job"
    started = time.monotonic()
    result = tinyrobust("split-evaluate", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, time.monotonic() - started


@pytest.mark.emulator
def test_two_jobs_measure_what_one_job_measures(one_job, tmp_path):
    out, one_seconds = one_job
    started = time.monotonic()
    result = tinyrobust("split-evaluate", *TINY, "--jobs", 2, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    print(f"tiny split-evaluate: --jobs 1 {one_seconds:.1f} s, --jobs 2 {time.monotonic() - started:.1f} s")
    assert measured(tmp_path) == measured(out)
    assert len(measured(out)["conditions"]) == CONDITIONS
    for build in ("", "device-defense"):  # each build ran on two emulators
        logs = tmp_path / "firmware" / f"beta{FIRST_BETA:g}" / build
        assert (logs / "emulator.log").is_file() and (logs / "emulator1.log").is_file()


@pytest.mark.emulator
def test_an_interrupted_run_keeps_what_it_measured_and_resumes_to_the_uninterrupted_results(one_job, tmp_path):
    out, _ = one_job
    command = [*TINYROBUST, "split-evaluate", *map(str, TINY), "--out", str(tmp_path)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=interruptible)  # fmt: skip
    try:
        while stored(tmp_path) == 0 and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert "every finished condition is saved: continue with the same command and --resume" in stderr
    kept = stored(tmp_path)
    assert 0 < kept < CONDITIONS

    result = tinyrobust("split-evaluate", *TINY, "--out", tmp_path, "--resume")
    assert result.returncode == 0, result.stderr
    assert measured(tmp_path) == measured(out)


@pytest.mark.emulator
def test_a_resumed_run_measures_only_what_its_store_lacks_and_refuses_changed_settings_or_model(
    one_job, tmp_path, monkeypatch
):
    from tinyrobust.split import evaluate

    out, _ = one_job
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    forget_last(tmp_path, 3)
    calls = []
    real = evaluate.measure
    monkeypatch.setattr(evaluate, "measure", lambda *args: calls.append(1) or real(*args))

    def settings(**changed):
        values = {**TINY_SPLIT, "device_defense": [{"stage": "median", "k": 3}], **changed}
        return evaluate.SplitSettings(out=tmp_path, **values)

    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        evaluate.split_evaluate(settings(), progress=False)
    evaluate.split_evaluate(settings(), progress=False, resume=True)
    assert len(calls) == 3
    assert measured(tmp_path) == measured(out)

    with pytest.raises(UserError) as error:
        evaluate.split_evaluate(settings(samples=5), progress=False, resume=True)
    assert str(error.value) == (f"{tmp_path} holds a split run with other settings; resume it with the settings it "
                                "began with, or choose another --out")  # fmt: skip
    store = Store(tmp_path / "results.sqlite")
    store.set_meta(f"split model_sha256 split-evaluate beta{FIRST_BETA:g}", "0" * 64)  # as if trained anew
    store.close()
    with pytest.raises(UserError, match=f"^the split model changed since the run in {tmp_path} began; start a new"):
        evaluate.split_evaluate(settings(), progress=False, resume=True)
    assert len(calls) == 3


@pytest.mark.emulator
def test_a_campaigns_split_section_runs_in_its_store_and_resumes(one_job, tmp_path):
    out, _ = one_job
    config = tmp_path / "split.toml"
    config.write_text(to_toml(parse({"split": TINY_SPLIT}).recorded()))
    run = tmp_path / "run"
    result = tinyrobust("campaign", "run", config, "--out", run, "--jobs", 2)
    assert result.returncode == 0, result.stderr
    folder = run / "split-factorized"
    assert measured(folder) == measured(out)  # the same conditions as split-evaluate's
    assert stored(run, "split-factorized") == CONDITIONS and not (folder / "results.sqlite").exists()
    assert not (run / "firmware").exists()  # no classifier: the config names no models
    assert f"results: {folder / 'results.json'}" in result.stdout

    forget_last(run, 4, "split-factorized", folder)
    result = tinyrobust("campaign", "run", config, "--out", run, "--resume")
    assert result.returncode == 0, result.stderr
    assert measured(folder) == measured(out)


def test_a_split_section_is_parsed_and_written_back_as_it_was_given():
    text = """
[split]
model = "split-digits"
entropy_models = ["factorized", "hyperprior"]
betas = [0.01]
samples = 20
eps = [0.0313725]
attacks = ["entropy", "noise"]
corruptions = ["snow"]
device_defense = [{stage = "median", k = 3}]
"""
    campaign = parse(tomllib.loads(text))
    assert campaign.models == [] and campaign.split.entropy_models == ["factorized", "hyperprior"]
    assert campaign.split.device_defense == [{"stage": "median", "k": 3}] and campaign.split.iterations is None
    assert parse(tomllib.loads(to_toml(campaign.recorded()))) == campaign
    assert Campaign.from_recorded(json.loads(json.dumps(campaign.recorded()))) == campaign
    settings = campaign.split.settings("hyperprior", campaign.board, "out", None, 2)
    assert (settings.entropy_model, settings.samples, settings.iterations, settings.jobs) == ("hyperprior", 20, 20, 2)
    both = parse({"models": ["digits-cnn"], "split": {}})
    assert both.models == ["digits-cnn"] and both.split.entropy_model_names() == ["factorized"]
    assert "split" not in Campaign().recorded()  # a campaign without one records what it always did


@pytest.mark.parametrize(("config", "message"), [
    ({"split": "split-digits"}, "campaign key 'split' must be a table"),
    ({"split": {"beta": [0.01]}}, "campaign key 'split.beta' is not a campaign setting; allowed keys here: adaptive,"),
    ({"split": {"model": "digits-cnn"}}, "campaign key 'split.model' is 'digits-cnn'; allowed: split-digits"),
    ({"split": {"entropy_models": ["gaussian"]}}, "'split.entropy_models' has 'gaussian'; allowed: factorized,"),
    ({"split": {"entropy_models": []}}, "'split.entropy_models' is empty; name at least one of factorized, hyperprior"),
    ({"split": {"attacks": ["noise", "noise"]}}, "campaign key 'split.attacks' names 'noise' twice; name it once"),
    ({"split": {"attacks": ["pgd"]}}, "campaign key 'split.attacks' has 'pgd'; allowed: entropy, accuracy, noise"),
    ({"split": {"corruptions": ["rain"]}}, "campaign key 'split.corruptions' has 'rain'; allowed: gaussian_noise,"),
    ({"split": {"eps": [0.0]}}, "campaign key 'split.eps' must be a list of positive numbers, not [0.0]"),
    ({"split": {"samples": 0}}, "campaign key 'split.samples' must be a whole number of at least 1, not 0"),
    ({"split": {"defense": "yes"}}, "campaign key 'split.defense' must be true or false, not 'yes'"),
    ({"split": {"device_defense": [{"stage": "blur"}]}},
     "campaign key 'split.device_defense' has a stage the device cannot run: there is no device pre-processing stage"),
    ({"split": {}, "attacks": [{"name": "fgsm", "eps": [0.1]}]},
     "campaign key 'models' is empty, so the attacks and defenses have no model to run on; name the models"),
])  # fmt: skip
def test_split_config_errors_are_one_sentence_naming_the_key(config, message):
    with pytest.raises(UserError) as error:
        parse(config)
    assert message in str(error.value)
    assert str(error.value).count(";") <= 1 and "\n" not in str(error.value)


def test_a_split_section_is_refused_before_anything_runs_where_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="^a campaign's split section runs on an emulated board for now; nucleo-f746zg"):
        Runner(parse({"board": "nucleo-f746zg", "split": {}}), tmp_path).run(progress=False)
    with pytest.raises(UserError, match="^--port reaches one device, while a campaign's split section starts its own"):
        Runner(parse({"split": {}}), tmp_path, port="socket://127.0.0.1:1").run(progress=False)
    assert not (tmp_path / "results.sqlite").exists()
    config = tmp_path / "c.toml"
    config.write_text('[split]\nattacks = ["entropy", "bits"]\n')
    result = tinyrobust("campaign", "run", config, "--out", tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: campaign key 'split.attacks' has 'bits'; allowed: entropy, accuracy, "
                                     "noise")  # fmt: skip
