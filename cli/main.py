"""The ``rtpo-data`` command: a thin shell over the library.

Every library error is an :class:`~rtpo_data.errors.RtpoDataError`; it becomes one red line on
stderr and exit code 1 (``--verbose`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect as inspect_
import logging
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape

from rtpo_data import __version__
from rtpo_data.config import BuildConfig
from rtpo_data.errors import RtpoDataError

app = typer.Typer(
    name="rtpo-data",
    help="Hint curricula for RTPO: build them once, render exact per-step prompts for TRL and OpenRLHF.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)


class _State:
    verbose = False


def fail(exc: BaseException) -> typer.Exit:
    """Print a library error as one line (or its traceback with --verbose) and return Exit(1)."""
    if _State.verbose:
        err_console.print(traceback.format_exc(), markup=False, highlight=False)
    err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _forget_handled_interrupt() -> None:
    """Tell CPython that the Ctrl-C just caught was handled, so the exit status stays 130.

    CPython marks a KeyboardInterrupt that leaves a *string* ``exec``/``eval`` as unhandled even
    when a caller catches it (``run_eval_code_obj`` in Python/pythonrun.c). Under ``python -m``,
    ``Py_RunMain`` then ignores the exit status and kills the process with SIGINT (-2). A build
    interrupted while ``transformers`` imports lazily hits this: ``dataclasses`` builds every
    ``__init__`` with ``exec(str)``. Each string exec clears the mark when it starts, so running a
    trivial one clears it; on an interpreter without the mark this does nothing.
    """
    exec("pass", {})


def _version_callback(value: bool) -> None:
    if value:
        out_console.print(f"rtpo-data {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and progress logs.")] = False,
) -> None:
    _State.verbose = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


def _load_recipe(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise RtpoDataError(f"--config {path}: file not found.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RtpoDataError(f"--config {path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict):
        raise RtpoDataError(f"--config {path}: expected a mapping of option names to values.")
    return data


def _build_parameters() -> list[inspect_.Parameter]:
    """``rtpo-data build``'s arguments, made from :class:`BuildConfig`'s fields: one flag per field
    (``--field-name`` unless the field names its own), with the field's help and default."""
    keyword = inspect_.Parameter.KEYWORD_ONLY
    params = [
        inspect_.Parameter("source", inspect_.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
            str | None, typer.Argument(help=_field_help("source"), show_default=False)]),
        inspect_.Parameter("config", keyword, default=None, annotation=Annotated[
            Path | None, typer.Option("--config", "-c", help="Recipe YAML (keys as the flags, without --); flags "
                                      "override its keys.")]),
    ]
    return [*params, *_field_options(f for f in dataclasses.fields(BuildConfig) if f.name != "source"),
            _progress_parameter()]


def _field_options(fields: Any) -> list[inspect_.Parameter]:
    """One ``--flag`` per BuildConfig field, with the field's help, default and flag names."""
    params = []
    for f in fields:
        kind = str(f.type)
        cli_type: Any = (bool if kind == "bool" else int if kind.startswith("int") else
                         float if kind.startswith("float") else list[str] if kind.startswith("tuple[str") else str)
        flags = f.metadata.get("flags") or (f"--{f.name.replace('_', '-')}",)
        metavar = "COLUMN" if cli_type == list[str] else None
        params.append(inspect_.Parameter(f.name, inspect_.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            cli_type | None, typer.Option(*flags, help=_field_help(f.name), show_default=False, metavar=metavar)]))
    return params


def _progress_parameter() -> inspect_.Parameter:
    return inspect_.Parameter("progress", inspect_.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")])


def _field_help(name: str) -> str:
    f = next(f for f in dataclasses.fields(BuildConfig) if f.name == name)
    default = f.default
    shown = "" if default in (None, (), "", False) or "\n" in str(default) else f" (default: {default})"
    return f.metadata["help"] + shown


def build(**options: Any) -> None:
    """Build a curriculum: tokenize every trace once and precompute its cut at every stage."""
    config, progress = options.pop("config"), options.pop("progress")
    with _writing():
        from rtpo_data.build import build as run_build

        cfg = BuildConfig.from_options(_load_recipe(config) if config else {}, options)
        result = run_build(cfg, progress=progress)
    _print_build_summary(result)


@contextlib.contextmanager
def _writing() -> Any:
    """Around a command that writes a curriculum: a library error is one red line and exit 1; Ctrl-C
    says that nothing was written (the library removes what it began) and exits 130."""
    try:
        yield
    except RtpoDataError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        _forget_handled_interrupt()
        err_console.print("[bold red]Interrupted:[/] nothing was written.")
        raise typer.Exit(130) from None


build.__signature__ = inspect_.Signature(_build_parameters())  # type: ignore[attr-defined]
app.command(no_args_is_help=True)(build)


def reschedule(**options: Any) -> None:
    """A new schedule (stages, unit, measure, horizon) on a built curriculum, without tokenizing again:
    new cut tables beside the curriculum's row shards (hard links where the filesystem allows)."""
    source, out, tokenizer = options.pop("curriculum"), options.pop("out"), options.pop("tokenizer")
    overwrite = bool(options.pop("overwrite"))
    changes = {k: v for k, v in options.items() if v is not None}
    with _writing():
        from rtpo_data.reschedule import reschedule as run_reschedule

        if not out:
            raise RtpoDataError("reschedule needs --out: the folder for the new curriculum.")
        result = run_reschedule(source, out, overwrite=overwrite, tokenizer=tokenizer, **changes)
    parent = result.manifest.parent or {}
    _print_build_summary(result, f"[bold green]Rescheduled[/] {source} -> {result.path} in {result.seconds:.1f}s "
                                 f"(row shards {parent.get('rows')}: nothing tokenized)")


def _reschedule_parameters() -> list[inspect_.Parameter]:
    """``rtpo-data reschedule``'s arguments: the BuildConfig fields a reschedule may change."""
    from rtpo_data.config import RESCHEDULE_OPTIONS

    fields = {f.name: f for f in dataclasses.fields(BuildConfig)}
    return [
        inspect_.Parameter("curriculum", inspect_.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
            Path, typer.Argument(help="The built curriculum whose rows to reuse.", show_default=False,
                                 metavar="CURRICULUM")]),
        *_field_options([fields["out"], fields["overwrite"]]),
        inspect_.Parameter("tokenizer", inspect_.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option("--tokenizer", "-t", help="Where the curriculum's tokenizer is, if the name it "
                                     "was built with does not load here (the same tokenizer; for the drift sample).")]),
        *_field_options(fields[name] for name in RESCHEDULE_OPTIONS),
    ]


reschedule.__signature__ = inspect_.Signature(_reschedule_parameters())  # type: ignore[attr-defined]
app.command(no_args_is_help=True)(reschedule)


def _leak_handling(stats: dict[str, Any]) -> str:
    """What --on-leak did, for the build summary and inspect."""
    leaks = stats.get("leaks") or {"on_leak": "keep"}
    if leaks["on_leak"] == "keep":
        return "--on-leak keep: traces kept as they are (inspect --verify reports hints that state the answer)"
    return (f"--on-leak {leaks['on_leak']}: {leaks['rows_trimmed']:,} rows trimmed before the statement of the answer, "
            f"{leaks['rows_dropped']:,} dropped")


def _print_build_summary(result: Any, title: str | None = None) -> None:
    m = result.manifest
    s = m.stats
    dropped = ", ".join(f"{k} {v}" for k, v in s["rows_dropped"].items()) or "none"
    cols = m.source["columns"]
    detected = [k for k, v in cols["detected"].items() if v]
    fr = ", ".join(f"{x:.2f}" for x in m.schedule["stage_fractions"])
    hint = ", ".join(f"{x:.0f}" for x in s["hint_tokens_mean"])
    lines = [
        title or f"[bold green]Built[/] {result.path} in {result.seconds:.1f}s",
        f"  rows      {s['rows_kept']:,} kept of {s['rows_read']:,} read; dropped: {dropped}",
        f"  columns   prompt={cols['prompt']!r} trace={cols['trace']!r} answer={cols['answer']!r}"
        + (f" (auto-detected: {', '.join(detected)})" if detected else ""),
        f"  answers   split off: {s['answer_split']}; derived from traces: {s['answers_derived']:,}",
        f"  tokens    trace p50 {s['trace_tokens']['p50']:.0f} / max {s['trace_tokens']['max']:,} "
        f"(total {s['trace_tokens']['total']:,}); prompt p50 {s['prompt_tokens']['p50']:.0f}",
        f"  schedule  {m.schedule['kind']} {m.schedule['direction']}, {m.num_stages} stages, "
        f"unit {m.unit}; fractions {fr}",
        f"  hint      mean tokens per stage: {hint}",
        f"  checks    drift {m.checks['drift_rate']:.2%} of {m.checks.get('sample_prompts', 0):,} prompts, "
        f"leaks {m.checks['leak_rate']:.2%} of {m.checks['sample_rows']:,} rows x {m.num_stages} stages "
        f"(a sample; inspect --verify checks all)",
        f"  leaks     {_leak_handling(s)}",
    ]
    for w in m.schedule.get("warnings", []):
        lines.append(f"  [yellow]warning[/]   {w}")
    out_console.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command(no_args_is_help=True)
def inspect(
    path: Annotated[Path, typer.Argument(help="Curriculum directory.", show_default=False)],
    stage: Annotated[int | None, typer.Option(help="Show --row's prompt at this stage.")] = None,
    step: Annotated[int | None, typer.Option(help="Show --row's prompt at this training step.")] = None,
    total_steps: Annotated[int | None, typer.Option(help="Schedule horizon for --step (default: the curriculum's).")] = None,
    row: Annotated[int, typer.Option(help="Row index for --stage/--step.")] = 0,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: schedule, hint tokens per stage, trace lengths.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check checksums, invariants, token exactness, drift and leaks on every row.")] = False,
    max_leak_rate: Annotated[float, typer.Option(help="With --verify: fail when more than this fraction of hints state the gold answer.")] = 0.01,
) -> None:
    """Show what is in a curriculum; --verify proves it exact (exit 1 if a check fails)."""
    import json

    from rtpo_data import report
    from rtpo_data.curriculum import Curriculum

    if output_format not in ("text", "json"):
        raise fail(RtpoDataError(f"--format {output_format!r}: use text or json."))
    try:
        if verify:
            from rtpo_data.verify import verify as run_verify

            result = run_verify(path, max_leak_rate=max_leak_rate)
            if output_format == "json":
                print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
            else:
                _print_verify(result)
            raise typer.Exit(0 if result.ok else 1)
        cur = Curriculum.open(path)
        if stage is not None or step is not None:
            if stage is not None and step is not None:
                raise RtpoDataError("Give --stage or --step, not both.")
            chosen = stage if stage is not None else cur.stage_at(step, total_steps)
            record = report.row_record(cur, row, chosen, step)
            if output_format == "json":
                print(json.dumps(record, indent=2, ensure_ascii=False))
            else:
                _print_row(record)
        else:
            data = report.summary(cur)
            if output_format == "json":
                print(json.dumps(data, indent=2, ensure_ascii=False))
            else:
                _print_summary(data)
        if plot is not None:
            written = report.plot(cur, plot)
            err_console.print(f"Wrote {written}")
    except RtpoDataError as exc:
        raise fail(exc) from None


def _print_summary(d: dict[str, Any]) -> None:
    src, rows, tokens, sched = d["source"], d["rows"], d["tokens"], d["schedule"]
    dropped = ", ".join(f"{k} {v}" for k, v in rows["dropped"].items()) or "none"
    out_console.print(f"[bold]{d['path']}[/]", highlight=False)
    out_console.print(
        f"  source     {src['path']} (split {src.get('split')}); columns prompt={src['columns']['prompt']!r} "
        f"trace={src['columns']['trace']!r} answer={src['columns']['answer']!r}\n"
        f"  tokenizer  {d['tokenizer']['name']}; placement {d['prompt']['placement']}; unit {d['unit']}, "
        f"measure {d['measure']}\n"
        f"  rows       {rows['kept']:,} kept of {rows['read']:,}; dropped: {dropped}\n"
        f"  prompt     tokens p50 {tokens['prompt']['p50']:.0f}, p95 {tokens['prompt']['p95']:.0f}, max {tokens['prompt']['max']:,}\n"
        f"  trace      tokens p50 {tokens['trace']['p50']:.0f}, p95 {tokens['trace']['p95']:.0f}, max {tokens['trace']['max']:,}\n"
        f"  schedule   {sched['kind']} {sched['direction']}, {sched['num_stages']} stages, total steps "
        f"{sched.get('total_steps') or 'set at train time'}\n"
        f"  checks     drift {d['checks']['drift_rate']:.2%}, leaks {d['checks']['leak_rate']:.2%} "
        f"(build sample of {d['checks']['sample_rows']} rows; --verify checks all)\n"
        f"  leaks      {_leak_handling(d['stats'])}",
        highlight=False,
        soft_wrap=True,
    )
    for w in sched.get("warnings", []):
        out_console.print(f"  [yellow]warning[/]    {w}", highlight=False)
    out_console.print(stage_table(d["stages"]))
    out_console.print(
        "[dim]target: the schedule's fraction; kept: the mean share of each trace shown\n"
        "once cut on the unit; saved: the share of trace tokens no rollout generates[/]",
        highlight=False,
    )


def stage_table(stages: list[dict[str, Any]]) -> Any:
    """The per-stage table, two-line headers so that it fits 80 columns even for 1M rows, traces of
    16k tokens and five-digit step counts (the hint tokens saved per sample equal the mean hint, so
    that column is only in ``--format json``)."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True)
    for name in ("stage", "steps", "target\nfraction", "kept\nfraction", "hint mean\n(tokens)", "hint p95\n(tokens)",
                 "rows\nwith hint", "saved\n%"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in stages:
        span = s.get("steps")
        steps = "-" if span is None else f"{span[0]}-{'' if span[1] is None else span[1]}"
        table.add_row(
            str(s["stage"]), steps, f"{s['fraction']:.3f}", f"{s['kept_fraction_mean']:.3f}",
            f"{s['hint_tokens_mean']:.1f}", f"{s['hint_tokens_p95']:.0f}", f"{s['rows_with_hint']:,}",
            f"{s['rollout_tokens_saved_pct']:.1f}",
        )
    return table


def _print_row(r: dict[str, Any]) -> None:
    from rich.text import Text

    head = (
        f"row {r['row']} (id {r['row_id']}), stage {r['stage']}"
        + (f" (step {r['step']})" if r["step"] is not None else "")
        + f": hint {r['hint_tokens']} of {r['trace_tokens']} trace tokens, prompt {len(r['prompt_ids'])} tokens"
    )
    out_console.print(f"[bold]{head}[/]", highlight=False, soft_wrap=True)
    p, a, b = r["prompt"], r["hint_start"], r["hint_end"]
    text = Text(p[:a], style="dim")
    if a == b:
        text.append("\u27e6no hint\u27e7", style="bold yellow")
    else:
        text.append("\u27e6", style="bold green")
        text.append(p[a:b], style="green")
        text.append("\u27e7", style="bold green")
    text.append(p[b:], style="dim")
    out_console.print(text, highlight=False, soft_wrap=True)
    out_console.print(f"[dim]gold answer:[/] {r['answer']}", highlight=False)


def _print_verify(result: Any) -> None:
    out_console.print(f"[bold]verify {result.path}[/]", highlight=False)
    for c in result.checks:
        mark = "[green]ok[/]" if c.failed == 0 else ("[yellow]rate[/]" if c.ok else "[red]FAILED[/]")
        out_console.print(f"  {mark:<18} {c.name:<12} {c.failed:,} of {c.checked:,} failed ({c.rate:.3%})"
                          + (f"  [dim]{c.note}[/]" if c.note else ""), highlight=False)
        for e in c.examples:
            out_console.print(f"      {e}", highlight=False, markup=False)
        if c.max_rate is not None and c.rows_failed:
            more = f" (first {len(c.rows):,} listed by --format json)" if c.rows_failed > len(c.rows) else ""
            out_console.print(f"      {c.rows_failed:,} rows flagged{more}: {', '.join(c.rows[:20])}"
                              + (", ..." if c.rows_failed > 20 else ""), highlight=False, markup=False, soft_wrap=True)
    out_console.print("[bold green]All checks passed.[/]" if result.ok else "[bold red]Some checks failed.[/]")


train_app = typer.Typer(help="Train with a curriculum through a trainer's own command line.", no_args_is_help=True)
app.add_typer(train_app, name="train")


# What `train trl|openrlhf|verl --help` print when the trainer is not installed. With the
# trainer installed, its own parser prints the full help (every GRPOConfig flag, for TRL).
TRAIN_HELP = {
    "trl": """\
Usage: rtpo-data train trl --curriculum DIR --model_name_or_path MODEL
                           [TRL flags] [--config grpo.yaml]

  GRPO in TRL (GRPOTrainer) with each prompt rendered from the curriculum at the
  step it is generated for. Launch on several GPUs with
  accelerate launch -m rtpo_data.adapters.trl ... (see docs/trl.md).

rtpo-data options:
  --curriculum DIR       Curriculum directory built by rtpo-data build.
  --reward_funcs PATH..  Reward functions as dotted import paths
                         (default: rtpo_data.rewards.accuracy_reward).
  --horizon MODE         Schedule horizon when curriculum and max_steps differ:
                         auto (default), curriculum, trainer.
  --eval_without_hint    Evaluate on every row of --curriculum without hint.
  --eval_curriculum DIR  Evaluate on every row of this curriculum (held-out
                         data) without hint.
  --allow_tokenizer_mismatch
                         Train even though the model's tokenizer or chat
                         template is not the curriculum's.
  --policy NAME          Hint policy: global (the curriculum's schedule, the
                         default), mixed or frontier (docs/policies.md).
  --success_threshold X  Total reward at or above which a completion counts
                         as a success for the hint policy (default 0.5).

TRL options: every GRPOConfig and ModelConfig flag (--model_name_or_path,
--output_dir, --max_steps, --use_vllm, --use_peft, ...) and --config FILE.YAML.
They are listed here once TRL is installed: pip install 'rtpo-data[trl]'.
""",
    "openrlhf": """\
Usage: rtpo-data train openrlhf --curriculum DIR [--rtpo.total_steps N]
                                [--rtpo.policy NAME] [--rtpo.success_threshold X]
                                -- <openrlhf.cli.train_ppo_ray flags>

  Run OpenRLHF's own CLI (openrlhf.cli.train_ppo_ray) with prompts from an
  rtpo-data curriculum, rendered for each training step (see docs/openrlhf.md).

rtpo-data options:
  --curriculum DIR       Curriculum directory built by rtpo-data build (becomes
                         --data.prompt_dataset).
  --rtpo.total_steps N   Schedule horizon in training steps (default: the
                         curriculum's --total-steps).
  --rtpo.policy NAME     Hint policy: global (the curriculum's schedule, the
                         default), mixed or frontier (docs/policies.md).
  --rtpo.success_threshold X
                         Reward at or above which a completion counts as a
                         success for the hint policy (default 0.5).
  --rtpo.allow_tokenizer_mismatch
                         Train even though the policy's tokenizer or chat
                         template is not the curriculum's.

Everything after -- goes to OpenRLHF unchanged. Needs OpenRLHF 0.11.2 and its
GPU stack: pip install 'rtpo-data[openrlhf]' 'openrlhf[vllm]==0.11.2'.
""",
    "verl": """\
Usage: rtpo-data train verl --curriculum DIR [--horizon MODE] [--policy NAME]
                            [--policy-seed N] [--success-threshold X]
                            [--print-overrides]
                            -- <verl.trainer.main_ppo Hydra overrides>

  Run verl's own trainer (verl.trainer.main_ppo, the V1 sync trainer) with
  prompts from an rtpo-data curriculum, rendered for each training step: the
  exact token ids of each row's hinted prompt go to the rollout server (see
  docs/verl.md).

rtpo-data options:
  --curriculum DIR       Curriculum directory built by rtpo-data build (becomes
                         data.train_files, and data.val_files unless given).
  --horizon MODE         Schedule horizon: auto (default), curriculum, trainer,
                         or a number of steps.
  --policy NAME          Hint policy: global (the curriculum's schedule, the
                         default), mixed or frontier (docs/policies.md).
  --policy-seed N        Seed of the policy's (row, step) hash.
  --success-threshold X  Reward at or above which a sample counts as a success
                         for the hint policy (default 0.5).
  --print-overrides      Print the plain `python -m verl.trainer.main_ppo`
                         command with rtpo-data's overrides, and exit.

Everything after -- goes to verl unchanged. Needs verl 0.9 and its GPU stack:
pip install 'rtpo-data[verl]' 'verl[vllm]==0.9.1'.
""",
}


def _asks_for_help(args: list[str]) -> bool:
    """``-h``/``--help`` among rtpo-data's own arguments (what follows ``--`` belongs to the trainer)."""
    ours = args[: args.index("--")] if "--" in args else args
    return any(a in ("-h", "--help") for a in ours)


def _trainer_help(trainer: str, main: Any) -> None:
    """The trainer's full help when it is installed (its parser prints it and exits 0), else ours.

    ``main`` imports the adapter; a trainer that is not installed makes that an ImportError, and
    help must work without it: the install hint is for when the command runs.
    """
    try:
        run = main()
    except ImportError:
        print(TRAIN_HELP[trainer], end="")
        return
    run(["--help"])


def _trl_main() -> Any:
    from rtpo_data.adapters.trl import main

    return main


def _openrlhf_main() -> Any:
    from rtpo_data.adapters.openrlhf import main

    return main


def _verl_main() -> Any:
    from rtpo_data.adapters.verl import main

    return main


# Everything after the command name goes to the trainer's launcher, --help included.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _launch(trainer: str, loader: Any, args: list[str]) -> None:
    """Run ``trainer``'s launcher (``loader()`` imports it) with ``args``; its help works without the
    trainer installed, and a missing trainer or bad input ends with a message, not a traceback."""
    if _asks_for_help(args):
        _trainer_help(trainer, loader)
        return
    try:
        loader()(args)
    except ImportError as exc:
        raise fail(RtpoDataError(f"{exc}")) from None
    except RtpoDataError as exc:
        raise fail(exc) from None


@train_app.command("trl", context_settings=_PASS_THROUGH, add_help_option=False)
def train_trl(ctx: typer.Context) -> None:
    """GRPO in TRL: --curriculum DIR plus any GRPOConfig / ModelConfig flag or --config grpo.yaml."""
    _launch("trl", _trl_main, list(ctx.args))


@train_app.command("openrlhf", context_settings=_PASS_THROUGH, add_help_option=False)
def train_openrlhf(ctx: typer.Context) -> None:
    """GRPO in OpenRLHF's Ray trainer: --curriculum DIR [--rtpo.total_steps N] [--rtpo.policy NAME] -- <openrlhf.cli.train_ppo_ray flags>."""
    _launch("openrlhf", _openrlhf_main, list(ctx.args))


@train_app.command("verl", context_settings=_PASS_THROUGH, add_help_option=False)
def train_verl(ctx: typer.Context) -> None:
    """GRPO in verl's V1 trainer: --curriculum DIR [--horizon MODE] [--policy NAME] -- <verl Hydra overrides>."""
    _launch("verl", _verl_main, list(ctx.args))


export_app = typer.Typer(help="Write a curriculum for a trainer's stock command line.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("trl", no_args_is_help=True)
def export_trl(
    curriculum: Annotated[Path, typer.Option(help="Curriculum directory.")],
    config: Annotated[Path, typer.Option(help="The trl grpo YAML the run will use.")],
    out: Annotated[Path, typer.Option(help="Run folder: train.parquet, grpo.yaml, export.json.")],
    num_processes: Annotated[int, typer.Option(help="Training processes (accelerate num_processes); the config is read as that many processes read it.")] = 1,
    horizon: Annotated[str, typer.Option(help="auto, curriculum or trainer (see docs/trl.md).")] = "auto",
) -> None:
    """Rows in the order `trl grpo` consumes them (shuffling off), each rendered for its step, plus a guard."""
    try:
        from rtpo_data.adapters.trl import export

        run = export(curriculum, config, out, num_processes=num_processes, horizon=horizon)
    except ImportError as exc:
        raise fail(RtpoDataError(str(exc))) from None
    except RtpoDataError as exc:
        raise fail(exc) from None
    out_console.print(f"[bold green]Exported[/] {run}: train with  trl grpo --config {run / 'grpo.yaml'}", highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    app()
