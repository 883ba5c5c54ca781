"""Command line: argument handling only; the work is in the modules it calls."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from tinyrobust.device.boards import DEFAULT_BOARD
from tinyrobust.device.meter import METERS
from tinyrobust.errors import UserError
from tinyrobust.model.quantize import PRECISIONS


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", message=".*PyTorch not found.*")


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of numbers such as 0.05,0.1") from None
    if any(v <= 0 for v in values):
        raise click.BadParameter("every eps must be positive")
    return values


def _device_options(command):
    """--channel, --port and --flash-with: how the host reaches the device, for every command that runs one."""
    options = [
        click.option(
            "--channel",
            type=click.Choice(["semihosting", "uart"]),
            help="How the host reaches the firmware: semihosting (emulator only, fast) or the board's UART "
            "[default: semihosting in the emulator, uart on a board]",
        ),
        click.option(
            "--port", help="Serial URL of a running device (/dev/ttyACM0, socket://127.0.0.1:N from `emulate`)."
        ),
        click.option(
            "--flash-with",
            type=click.Choice(["pyocd", "mbed", "none"]),
            default="pyocd",
            show_default=True,
            help="How a real board at --port is flashed first: pyOCD, a copy onto its Mbed drive, or not at all.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _ray_options(command):
    """--ray and --devices-per-node: run the devices and the attacks on a Ray cluster."""
    command = click.option(
        "--devices-per-node", default=1, show_default=True,
        help="With --ray: devices on each node (emulators; for a real board, at most the node's attached ones).",
    )(command)  # fmt: skip
    return click.option(
        "--ray", metavar="local|auto|ADDRESS",
        help="Run on a Ray cluster: local starts one on this machine, auto joins this machine's cluster, an "
        "address (host:port) joins that head. Needs tinyrobust[ray].",
    )(command)  # fmt: skip


def _stack_option(command):
    """--stack: the firmware's stack reserve, for the commands that build a model's firmware."""
    from tinyrobust.build.firmware import STACK_BYTES
    return click.option(
        "--stack", type=int, metavar="BYTES", help="Reserve this much stack in the firmware, e.g. what `tinyrobust "
        "profile` recommends; refused when below the stack's high-water mark, measured first by a profile build in "
        f"the emulator  [default: {STACK_BYTES}]"
    )(command)


def _log_options(command):
    """--verbose: the libraries' own logging on screen instead of in the run's log file."""
    return click.option(
        "--verbose", is_flag=True, help="Show the libraries' own logging (TensorFlow, Keras, ART) instead of "
        "writing it to tinyrobust.log in the output folder (for commands without one, in the cache folder)."
    )(command)


def _log(out: Path | None, verbose: bool):
    """Where the libraries' chatter goes while a command works: out/tinyrobust.log, or the screen."""
    from tinyrobust.console import libraries_to_log
    from tinyrobust.model.zoo import cache_dir

    return libraries_to_log(None if verbose else (out or cache_dir()) / "tinyrobust.log")


PRECISION_HELP = "int8, or int16x8 (16-bit activations, 8-bit weights). Default: a .tflite's own, int8 for the others."


def _precision(precision: str | None, models: list[str]) -> str:
    """--precision when given, else the models' own: a .tflite file's, int8 for built-in models."""
    from tinyrobust.model.zoo import default_precision

    found = {default_precision(m) for m in models} if precision is None else {precision}
    return found.pop() if len(found) == 1 else "int8"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tinyrobust")
def cli() -> None:
    """Measure the adversarial robustness of quantized neural networks on Cortex-M devices."""


@cli.command("flash-and-evaluate")
@click.option(
    "--model",
    default="digits-cnn",
    show_default=True,
    help="Built-in model name, a quantized .tflite, or a float .keras/.h5 model to quantize on --data.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help=PRECISION_HELP,
)
@click.option("--float-model", type=click.Path(), help="The float .keras/.h5 model of a .tflite (white-box attacks).")
@click.option(
    "--data",
    type=click.Path(),
    help="Test data for a .tflite model, or for a built-in model a data set to train it on: an .npz (x, y for a "
    ".tflite; x_train, y_train, x_test, y_test, or x and y), CIFAR-10's cifar-10-batches-bin folder or its .tar.gz, "
    "or a folder of images with one sub-folder per class.",
)
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Board name (see `tinyrobust boards`).")
@click.option("--samples", default=200, show_default=True, help="Test samples per attack and eps.")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attacks; empty for clean only.")
@click.option("--eps", "eps", default="0.05,0.1,0.2", show_default=True, help="Comma-separated L-inf budgets.")
@click.option("--seed", default=0, show_default=True, help="Seed for sample choice and attacks.")
@click.option(
    "--defense",
    "defenses",
    multiple=True,
    metavar="NAME[:PARAM=VALUE]...",
    help="A defense (see `tinyrobust defenses`), repeatable: where=host or where=device and its parameters, values "
    "as a campaign's TOML writes them, e.g. randomized-smoothing:where=device:sigma=0.25:n=32.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Directory for results.json, report.html, the results store and the firmware.",
)
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the interrupted run in this directory.")
@_device_options
@click.option("--jobs", default=1, show_default=True, help="Emulators run side by side, sharing the samples.")
@_ray_options
@_stack_option
@_log_options
def flash_and_evaluate(
    model, precision, float_model, data, board, samples, attacks, eps, seed, defenses, out, resume, channel, port,
    flash_with, jobs, ray, devices_per_node, stack, verbose,
) -> None:  # fmt: skip
    """Build firmware for a model, run clean and adversarial inputs on the board, compare with the host."""
    from tinyrobust.evaluate import Settings, resume_settings
    from tinyrobust.evaluate import flash_and_evaluate as run

    if resume is not None:
        settings = resume_settings(resume)
        settings.channel, settings.port, settings.flash_with, settings.jobs = channel, port, flash_with, jobs
        settings.stack, settings.ray, settings.devices_per_node = stack, ray, devices_per_node
    else:
        settings = Settings(
            model=model,
            precision=precision,
            float_model=float_model,
            data=data,
            board=board,
            samples=samples,
            attacks=[a.strip() for a in attacks.split(",") if a.strip()],
            eps=_floats(eps),
            seed=seed,
            defenses=[_defense(d) for d in defenses],
            out=out,
            channel=channel,
            port=port,
            flash_with=flash_with,
            jobs=jobs,
            ray=ray,
            devices_per_node=devices_per_node,
            stack=stack,
        )
    try:
        with _log(settings.out, verbose):
            results = run(settings, progress=True)
    except KeyboardInterrupt:
        click.echo(
            "\ninterrupted; the emulator was stopped and every finished sample is saved: "
            f"continue with tinyrobust flash-and-evaluate --resume {settings.out}",
            err=True,
        )
        sys.exit(130)
    _print_summary(results, settings.out)


def _defense(text: str) -> dict:
    """A defense as a campaign's [[defenses]] table, from NAME[:PARAM=VALUE]... (where=host|device among them)."""
    import tomllib

    name, *items = text.split(":")
    table: dict = {"name": name.strip(), "params": {}}
    for item in items:
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key:
            raise click.BadParameter(f"'{item}' in '{text}' is not PARAM=VALUE, e.g. randomized-smoothing:where=device")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word is a string
        if key == "where":
            table["where"] = parsed
        else:
            table["params"][key] = parsed
    return table


def _smoothing_line(run: dict) -> str:
    """A smoothing run's certificates and cost in one line (results.json: runs[].smoothing)."""
    s, cost = run["smoothing"], run["smoothing"]["cost"]
    certified = ", ".join(f"{v:.3f} at {r}" for r, v in s["certified_accuracy"].items())
    ratio = f", x{cost['ratio']:.1f} the undefended build's" if cost["ratio"] else ""
    return (f"{run['attack']} eps {run['eps']:g}, smoothing sigma {s['sigma']:g} n {s['n']}: smoothed accuracy "
            f"{s['accuracy']:.3f} (abstained {s['abstained']:.3f}), mean certified radius {s['radius_mean']:.3f} "
            f"(at most {s['radius_largest'] or 0:.3f}), certified accuracy {certified}; {cost['per_input']:,.0f} "
            f"{cost['unit']} per input{ratio}")  # fmt: skip


def _print_summary(results: dict, out: Path) -> None:
    several = len(results.get("builds", [])) > 1 or any(
        r["mode"] != "transfer" or r["defense"] for r in results["runs"]
    )
    head = f"{'model precision mode defense':<40} " if several else ""
    click.echo(f"{head}{'attack':<12} {'eps':>6} {'float':>6} {'tflite':>6} {'tflm':>6} {'device':>6}  device=TFLM")
    for r in results["runs"]:
        acc = r["accuracy"]
        cells = " ".join(
            f"{acc[k]:6.3f}" if acc[k] is not None else f"{'-':>6}" for k in ("float", "tflite", "tflm", "device")
        )
        condition = ""
        if several:
            defense = r["defense"]["name"] if r["defense"] else "-"
            condition = f"{r['model'] + ' ' + r['precision'] + ' ' + r['mode'] + ' ' + defense:<40} "
        queries = f"  {r['queries']:,} queries" if r.get("queries") is not None else ""
        exact = r["agreement"]["device_vs_tflm_bit_exact"]
        click.echo(f"{condition}{r['attack']:<12} {r['eps']:6g} {cells}  {exact:.3f}{queries}")
    for r in results["runs"]:
        if r.get("smoothing"):
            click.echo(_smoothing_line(r))
    lat, mem = results["latency"], results["memory"]
    click.echo(
        f"latency: {lat['per_inference']['median']:,.0f} {lat['unit']} per inference (median); "
        f"flash {mem['flash_bytes']:,} B, RAM {mem['ram_bytes']:,} B, arena {mem['arena_bytes']:,} B"
    )
    if lat.get("energy"):
        click.echo(f"energy (estimate): {lat['energy']['estimate_uj']:,.1f} uJ per inference at the median count, from "
                   "the board file's datasheet figures (results.json: latency.energy)")  # fmt: skip
    click.echo(f"wall time {results['wall_seconds']:.1f} s; report: {out / 'report.html'}")


@cli.group()
def campaign() -> None:
    """Attack and defense campaigns described by a config file."""


@campaign.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Directory for results.json, the CSV tables, report.html, the results store and the firmware.",
)
@click.option("--jobs", default=1, show_default=True, help="Emulators run side by side, sharing the samples.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@_device_options
@_ray_options
@_stack_option
@_log_options
def campaign_run(config, out, jobs, resume, channel, port, flash_with, ray, devices_per_node, stack, verbose) -> None:
    """Run the campaign in CONFIG (TOML): models, precisions, board, samples, seeds, attacks, defenses, and a
    [split] section (split-evaluate's settings, per entropy model)."""
    from tinyrobust.campaign.config import load_config
    from tinyrobust.campaign.runner import STORE_NAME, run_campaign

    plan = load_config(config)
    if (out / STORE_NAME).is_file() and not resume:
        raise UserError(f"{out} already holds a run; continue it with --resume or choose another --out")
    options = {"jobs": jobs, "channel": channel, "port": port, "flash_with": flash_with, "stack": stack, "ray": ray,
               "devices_per_node": devices_per_node}  # fmt: skip
    try:
        with _log(out, verbose):
            results = run_campaign(plan, out, progress=True, **options)
    except KeyboardInterrupt:
        click.echo(
            "\ninterrupted; the emulators were stopped and every finished sample is saved: "
            f"continue with tinyrobust campaign run {config} --out {out} --resume",
            err=True,
        )
        sys.exit(130)
    if results["builds"]:
        _print_summary(results, out)
    for entropy_model, split in results.get("split", {}).items():
        _print_split(split, out / f"split-{entropy_model}")


def _stages(text: str) -> list[dict]:
    """Device pre-processing stages from STAGE:PARAM=VALUE[:PARAM=VALUE], comma-separated."""
    stages = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, *params = part.split(":")
        stage: dict = {"stage": name}
        for param in params:
            key, _, value = param.partition("=")
            try:
                stage[key.strip()] = int(value)
            except ValueError:
                raise click.BadParameter(f"'{param}' in '{part}' is not PARAM=INTEGER, e.g. median:k=3") from None
        stages.append(stage)
    return stages


@cli.command("split-evaluate")
@click.argument("model", default="split-digits")
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Emulated board (see `tinyrobust boards`).")
@click.option("--data", type=click.Path(), help="A data set to train the split model on, as flash-and-evaluate's "
              "--data for a built-in model  [default: the model's own]")  # fmt: skip
@click.option("--beta", "betas", type=float, multiple=True, help="Rate weights to run  [default: the model's]")
@click.option("--entropy-model", type=click.Choice(["factorized", "hyperprior"]),
              help="The latent's entropy model  [default: the model's]")
@click.option("--samples", default=100, show_default=True, help="Test samples per condition.")
@click.option("--eps", "eps", default="2/255,4/255,8/255,16/255,32/255", show_default=True,
              help="Comma-separated L-inf budgets, numbers or fractions.")  # fmt: skip
@click.option("--attacks", default="entropy,accuracy,noise", show_default=True,
              help="Comma-separated: entropy, accuracy, noise; empty for clean only.")  # fmt: skip
@click.option("--iterations", default=20, show_default=True, help="PGD steps of the attacks.")
@click.option("--eot", default=16, show_default=True, help="Noise draws per PGD step (expectation over them).")
@click.option("--corruptions", default="all", show_default=True,
              help="Comma-separated ImageNet-C corruptions run at severities 1-5; all, or empty for none.")  # fmt: skip
@click.option("--defense/--no-defense", default=True, show_default=True,
              help="Also run clean and entropy-attacked inputs through the likelihood-weighted TV defense.")
@click.option("--device-defense", default="",
              help="Pre-processing stages the device runs before the head, as STAGE:PARAM=VALUE, comma-separated "
              "(e.g. median:k=3, squeeze_bits:bits=5); clean and entropy-attacked inputs also go to that build.")
@click.option("--adaptive/--no-adaptive", default=True, show_default=True,
              help="Also attack each defense with the entropy attack through it (BPDA).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results-split"), show_default=True)
@click.option("--jobs", default=1, show_default=True, help="Emulators run side by side, sharing the samples.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out, given the same settings.")
@_log_options
def split_evaluate(model, board, data, betas, entropy_model, samples, eps, attacks, iterations, eot, corruptions,
                   defense, device_defense, adaptive, seed, out, jobs, resume, verbose) -> None:  # fmt: skip
    """Run a split network's head on the board, its latent entropy-coded there; measure the bytes it sends."""
    from tinyrobust.split.corruptions import CORRUPTIONS
    from tinyrobust.split.evaluate import SplitSettings
    from tinyrobust.split.evaluate import split_evaluate as run

    def budget(text: str) -> float:
        number, _, over = text.partition("/")
        try:
            return float(number) / (float(over) if over else 1.0)
        except ValueError:
            raise click.BadParameter(f"'{text}' is not a number or a fraction such as 8/255") from None

    settings = SplitSettings(model=model, entropy_model=entropy_model, board=board, betas=list(betas) or None,
                             samples=samples,
                             eps=[budget(e.strip()) for e in eps.split(",") if e.strip()],
                             attacks=[a.strip() for a in attacks.split(",") if a.strip()], iterations=iterations,
                             eot=eot, defense=defense, device_defense=_stages(device_defense),
                             adaptive=adaptive, seed=seed, data=data, out=out, jobs=jobs,
                             corruptions=list(CORRUPTIONS) if corruptions == "all" else
                             [c.strip() for c in corruptions.split(",") if c.strip()])  # fmt: skip
    try:
        with _log(out, verbose):
            results = run(settings, progress=True, resume=resume)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; the emulators were stopped and every finished condition is saved: continue with "
                   "the same command and --resume", err=True)  # fmt: skip
        sys.exit(130)
    _print_split(results, out)


def _print_split(results: dict, out: Path) -> None:
    click.echo(f"{results['model']} on {results['board']} ({results['data_set']}); bytes the device sent")
    click.echo(f"{'beta':>8} {'condition':<32} {'level':>5} {'bytes':>8} {'ideal':>8} {'vs clean':>9} {'acc':>6} exact")
    for r in results["conditions"]:
        overhead = "" if r["overhead_vs_clean"] is None else f"{r['overhead_vs_clean']:+.1%}"
        mean, ideal, acc = r["bytes"]["mean"], r["ideal_bytes_mean"], r["accuracy"]
        level = f"s{r['severity']}" if r["severity"] else f"{r['eps'] * 255:.3g}"
        click.echo(f"{r['beta']:8g} {r['name']:<32} {level:>5} {mean or 0:8.1f} {ideal or 0:8.1f} "
                   f"{overhead:>9} {acc or 0:6.3f} {r['round_trip_exact']:.3f}")  # fmt: skip
    for c in results["coder"]:
        click.echo(f"beta {c['beta']:g}: head {c['head_instructions']:,.0f} instructions, coder "
                   f"{c['coder_instructions']:,.0f} ({c['instructions_per_symbol']:.1f} per symbol, "
                   f"{c['coder_share_of_head']:.1%} of the head), tables {c['table_flash_bytes']:,} B of flash")
        if c["device_defended_head_instructions"] is not None:
            stages = ", ".join(st["stage"] + "".join(f" {k}={v}" for k, v in st.items() if k != "stage")
                               for st in results["device_defense"])  # fmt: skip
            extra = c["device_defended_head_instructions"] - c["head_instructions"]
            click.echo(f"beta {c['beta']:g}: behind the device defense ({stages}) the head takes "
                       f"{c['device_defended_head_instructions']:,.0f} instructions ({extra:+,.0f})")
    click.echo(
        f"level: eps in 1/255 of the input range, or sN a corruption's severity; "
        f"wall time {results['wall_seconds']} s; results: {out / 'results.json'}; report: {out / 'report.html'}"
    )


@cli.command()
def doctor() -> None:
    """List what is missing (toolchain, emulator, Python packages) and how to install it."""
    from tinyrobust.doctor import checks, optional

    missing = 0
    for name, ok, fix in checks():
        click.echo(f"{'ok     ' if ok else 'MISSING'} {name}" + ("" if ok else f"  ->  {fix}"))
        missing += not ok
    for name, ok, fix in optional():
        click.echo(f"{'ok     ' if ok else 'absent '} {name}" + ("" if ok else f"  ->  {fix}"))
    if missing:
        raise SystemExit(1)


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n % (1 << 20) == 0 else f"{n >> 10} KB"


@cli.group(invoke_without_command=True)
@click.pass_context
def boards(ctx) -> None:
    """List the built-in boards (`boards detect`: the boards and serial ports attached to this machine)."""
    from tinyrobust.device.boards import board_names, load_board

    if ctx.invoked_subcommand is not None:
        return
    rows = [("board", "core", "FPU", "flash", "RAM", "run by")]
    for name in board_names():
        b = load_board(name)
        extra = [f"{_size(region.size)} {region_name}" for region_name, region in b.extra_ram.items()]
        ram = " + ".join([_size(b.ram.size), *extra])
        rows.append((name, b.core, b.fpu or "none", _size(b.flash.size), ram, b.how_run))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [row[i].rjust(widths[i]) if i == 3 else row[i].ljust(widths[i]) for i in range(5)]
        click.echo("  ".join([*cells, row[5]]))


@boards.command()
@click.option("--ray-resources", is_flag=True,
              help="Print the attached boards as Ray resources, for ray start --resources on this node.")  # fmt: skip
def detect(ray_resources) -> None:
    """List attached debug probes (pyOCD), Mbed boards (mbed-tools) and serial ports (pyserial)."""
    from tinyrobust.device.flashing import NOTHING_ATTACHED_FIX, attached_of, detect

    if ray_resources:
        from tinyrobust.campaign.cluster import board_resource
        from tinyrobust.device.boards import board_names, load_board

        boards_here = {name: len(attached_of(load_board(name))) for name in board_names()}
        click.echo(json.dumps({board_resource(name): n for name, n in boards_here.items() if n}))
        return
    attached = detect()
    for probe in attached.probes:
        click.echo(f"probe   {probe['uid']}  {probe['description']}")
    for device in attached.mbed:
        where = ", ".join(device["mount_points"]) or "no drive"
        click.echo(f"mbed    {device['board']}  serial {device['serial_port']}  drive {where}")
    for port in attached.ports:
        click.echo(f"serial  {port['device']}  {port['description']}" + ("" if port["usb"] else "  (not USB)"))
    if attached.found_nothing():
        click.echo(
            "no board found: pyOCD saw no debug probe, mbed-tools no Mbed board and pyserial no USB serial port; "
            f"{NOTHING_ATTACHED_FIX}",
            err=True,
        )
        raise SystemExit(1)


@cli.command()
@click.argument("model")
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Emulated board (see `tinyrobust boards`).")
@click.option("--port-tcp", type=int, required=True, help="TCP port on 127.0.0.1 that serves the board's UART.")
@_stack_option
def emulate(model, board, port_tcp, stack) -> None:
    """Build MODEL's firmware (built-in name or .tflite) and run it in QEMU, its UART on a TCP port, until
    Ctrl-C; evaluate against it with flash-and-evaluate --port socket://127.0.0.1:PORT."""
    from tinyrobust.emulate import serve

    def ready(url: str) -> None:
        click.echo(f"{board} runs {model}; its UART is {url}; Ctrl-C stops the emulator", err=True)
        click.echo(url)  # the one line a script needs

    try:
        serve(model, board, port_tcp, ready, stack)
    except KeyboardInterrupt:
        click.echo("the emulator was stopped", err=True)


@cli.command()
@click.option("--retrain", metavar="NAME",
              help="Train NAME again from its file and replace the trained files that ship with the package.")
def models(retrain: str | None) -> None:
    """List the built-in models, or train one again into the trained files that ship with the package."""
    from tinyrobust.model.zoo import builtin_names, builtin_spec

    if retrain:
        from tinyrobust.model import shipped

        with _log(None, False):
            folder = shipped.retrain(retrain)
        click.echo(f"{retrain}'s trained files and manifest are in {folder}")
        return
    rows = []
    for name in builtin_names():
        spec = builtin_spec(name)
        # An autoencoder's outputs are its reconstructed inputs, not classes.
        kind = "outputs" if spec["training"].get("loss") == "reconstruction" else "classes"
        rows.append((name, "x".join(map(str, spec["input_shape"])), f"{spec['classes']} {kind}", spec["description"]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    click.echo(f"{'model':<{widths[0]}}  {'input':<{widths[1]}}  {'output':<{widths[2]}}  description")
    for name, shape, output, description in rows:
        click.echo(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {output:<{widths[2]}}  {description}")


def _parameter_lines(values: dict, meanings: dict) -> list[str]:
    """One line per parameter: its value as a config sets it, and what it means."""
    from tinyrobust.campaign.config import toml_value

    shown = {k: "unset" if v is None else toml_value(v) for k, v in values.items()}
    width = max((len(f"{k} = {v}") for k, v in shown.items()), default=0)
    return [f"    {f'{k} = {v}':<{width}}  {meanings[k]}" for k, v in shown.items()]


def _paragraph(text: str, indent: str = "    ") -> str:
    import textwrap

    return textwrap.fill(" ".join(text.split()), width=116, initial_indent=indent, subsequent_indent=indent)


@cli.command("attacks")
def attacks_command() -> None:
    """List the attacks: what eps means for each, its norm, how it runs, and its preset parameters."""
    from tinyrobust.campaign.attacks import ATTACKS

    click.echo(_paragraph("eps is a budget (the attack's own, in its norm) or a bound (a minimal-perturbation "
                          "attack's L-inf limit; 0: none). White-box attacks need the float model's gradients and run "
                          "in mode transfer; black-box ones need only outputs and can also query the device (mode "
                          "on-device). A campaign's [[attacks]] params override the preset.", ""))  # fmt: skip
    for a in ATTACKS.values():
        norm = {"inf": "L-inf"}.get(a.norm, f"L{a.norm}")
        box, modes = ("black-box", "transfer, on-device") if a.queries else ("white-box", "transfer")
        click.echo(f"\n{a.name}: eps {a.eps}, {norm}, {box}; modes {modes}")
        click.echo(_paragraph(a.description))
        if a.min_side:
            click.echo(f"    needs images at least {a.min_side} pixels on a side")
        for line in _parameter_lines(a.preset, a.meanings):
            click.echo(line)


@cli.command("defenses")
def defenses_command() -> None:
    """List the defenses: their kind, where they run, their parameters with defaults, and their named presets."""
    from tinyrobust.campaign.config import toml_value
    from tinyrobust.campaign.defenses import DEFENSES

    click.echo(_paragraph('Input defenses change what the device is given, on the host or in its firmware; training '
                          'defenses retrain the float model, which is then quantized and deployed as firmware of its '
                          'own; smoothing defenses run the network in the firmware on noisy copies of each input and '
                          'answer with their votes, which the host certifies. A campaign\'s [[defenses]] params '
                          'override the defaults; params.preset = "NAME" starts from a named preset.', ""))  # fmt: skip
    for d in DEFENSES.values():
        click.echo(f"\n{d.name}: {d.kind} defense; where {', '.join(d.places)}")
        click.echo(_paragraph(d.summary))
        for line in _parameter_lines(d.defaults, d.meanings):
            click.echo(line)
        for preset, values in d.presets.items():
            click.echo(f"    preset {preset}: " + ", ".join(f"{k} = {toml_value(v)}" for k, v in values.items()))


@cli.command()
@click.argument("model")
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Board name (see `tinyrobust boards`).")
@click.option("--inputs", type=click.Path(path_type=Path), help="An .npy of quantized inputs (default: random ones).")
@click.option("--samples", type=int, help="How many inputs to run  [default: 10 random, or every given input]")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results to this file.")
@click.option("--precision", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
@click.option("--per-layer", is_flag=True, help="Also compare every layer's output tensor with TFLM's, walking the "
              "schedule step by step in a profile build, and name the first layer that differs.")  # fmt: skip
@_stack_option
@_log_options
def validate(model, board, inputs, samples, json_path, precision, per_layer, stack, verbose) -> None:
    """Run MODEL (built-in name or .tflite) on the board; compare its outputs with TFLM and TFLite."""
    import json

    from tinyrobust.validate import format_table
    from tinyrobust.validate import validate as run

    with _log(None, verbose):
        results = run(model, board, inputs, samples, _precision(precision, [model]), per_layer=per_layer,
                      stack=stack)
    click.echo(format_table(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


@cli.command()
@click.option("--models", help="Comma-separated built-in names or .tflite files  [default: every built-in model]")
@click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Board name (see `tinyrobust boards`).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results to this file.")
@click.option("--precision", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
@_stack_option
@_log_options
def bench(models, board, json_path, precision, stack, verbose) -> None:
    """Instructions per inference, our arena against TFLM's, and flash code and weights, per model."""
    import json

    from tinyrobust.bench import bench as run
    from tinyrobust.bench import markdown
    from tinyrobust.console import status

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    with _log(None, verbose):
        results = run(names, board, _precision(precision, names or []), progress=status, stack=stack)
    click.echo(markdown(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


@cli.command("profile")
@click.argument("model")
@click.option(
    "--board",
    "boards",
    multiple=True,
    default=[DEFAULT_BOARD],
    show_default=True,
    help="Emulated board (see `tinyrobust boards`); give it several times for a cross-board table.",
)
@click.option("--precision", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results to this file.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the layers to this CSV file.")
@click.option("--html", "html_path", type=click.Path(path_type=Path),
              help="Also write a page with latency bars and the arena's buffers over the schedule.")  # fmt: skip
@_stack_option
@click.option("--meter", type=click.Choice(METERS),
              help="Measure the energy of whole inferences on a real --board at --port with this meter, which watches "
              "the board's energy pin (needs tinyrobust[energy]); the layers need the emulator.")  # fmt: skip
@click.option("--port", help="With --meter: the real board's serial port (/dev/ttyACM0).")
@click.option("--flash-with", type=click.Choice(["pyocd", "mbed", "none"]), default="pyocd", show_default=True,
              help="With --meter: how the board at --port is flashed first.")  # fmt: skip
@_log_options
def profile(model, boards, precision, json_path, csv_path, html_path, stack, meter, port, flash_with, verbose) -> None:
    """Per layer of MODEL (built-in name or .tflite): MACs, instructions (cycles on hardware) and share of the
    inference, checked to add up to it, the arena's buffers live at each step, where flash and RAM go, and the
    stack's high-water mark with the reserve it recommends (--stack)."""
    import json

    from tinyrobust.console import status
    from tinyrobust.profile import format_results
    from tinyrobust.profile import profile as run

    if port and not meter:
        raise UserError("--port reaches a real board for --meter; profile's layers run in the emulator, so give "
                        "--meter with it or leave it out")  # fmt: skip
    if meter and html_path:
        raise UserError("--html draws the layers, which --meter does not measure (they need the emulator); leave out "
                        "--html or --meter")  # fmt: skip
    with _log(None, verbose):
        precision = _precision(precision, [model])
        results = run(model, list(dict.fromkeys(boards)), precision, progress=status, stack=stack, meter=meter,
                      port=port, flash_with=flash_with)  # fmt: skip
    click.echo(format_results(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    if csv_path and "layers" in results.get("boards", [results])[0]:
        from tinyrobust.profile import write_csv

        write_csv(results, csv_path)
    if html_path:
        from tinyrobust.report.profile import write_profile_page

        write_profile_page(results, html_path)


def _stop_on_sigterm() -> None:
    """SIGTERM (kill, a CI runner's timeout) stops the run as Ctrl-C does, so that emulators are stopped and what
    was measured is saved, instead of ending the process where it stands."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    _quiet_libraries()
    _stop_on_sigterm()
    from tinyrobust.device.link import LinkError

    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(
            "interrupted; the emulator was stopped and results measured so far are in the output folder",
            err=True,
        )
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except LinkError as exc:
        click.echo(f"error: the link to the device failed ({exc}); finished samples are saved, use --resume", err=True)
        sys.exit(1)
