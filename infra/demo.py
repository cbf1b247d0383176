"""`make demo`: the whole system on a generated world, start to finish, then a summary; stops all it started.

1. Start the broker, two stream workers, the enrichment and interest workers.
2. Stream the catalog (a tenth of it after its interactions) and most of the interactions, with a few bad records.
3. Once state and item knowledge have caught up, train a small distilled ranker and interest model from the topics
   and serve it with Triton; the interest worker picks the model up and infers every user's beyond-log items.
4. Stream the rest of the interactions at a steady rate, live, and time how fresh state and interests stay.
5. Summarise throughput, freshness, and a few users' recommendations with the reasoning behind them.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from tritonclient.utils import InferenceServerException

from dashboard.probes import pipeline_lag
from infra.demo_lag import describe_lag
from infra.stack import StackError, stack_failure, start_serving, start_stack, stop_stack
from infra.synthetic import SyntheticWorld, generate
from infra.triton import TritonError
from infra.watch import PipelineWatch
from kafka_adapter.publish import publish_lines
from reaseq.contracts import Interaction
from reaseq.runfiles import RunState
from reaseq.settings import Settings
from reaseq.wire import encode
from serving.client import RankClient, served_version
from training.datasets import load_from_topics
from training.train import small_config, train

BAD_RECORDS = [b"{not json", b'{"schema_version": 9, "user_id": "u"}', b'{"schema_version": 1, "user_id": "u"}']
LIVE_SHARE = 0.25  # of the interactions, streamed after the model is served
PHASE_TIMEOUT_S = 900.0


@dataclass
class DemoRun:
    """What the live view shows besides the watched topics."""

    settings: Settings
    state: RunState
    world: SyntheticWorld
    watch: PipelineWatch
    phase: str = "starting"
    published: int = 0
    lag: dict[str, dict[str, int]] | None = None  # records behind, per consumer group and topic
    _lag_at: float = 0.0

    def refresh(self) -> None:
        self.watch.poll(0.3)
        if time.monotonic() - self._lag_at > 2.0:  # lag needs a few broker round trips: not every frame
            self.lag = pipeline_lag(self.settings, self.state.bootstrap, generation=1)
            self._lag_at = time.monotonic()

    def model_version(self) -> str:
        if self.state.triton is None:
            return "none yet (trained after the first part of the stream)"
        try:
            number = served_version(self.state.triton.endpoints())
        except (InferenceServerException, OSError) as error:  # a view, not a check: show what the server says
            return f"Triton not answering ({error})"
        return f"ranker v{number} on Triton" if number else "Triton loading"

    def view(self) -> Table:
        watch, users = self.watch, len(self.world.interests)
        table = Table(title=f"reaseq demo: {self.phase}", show_header=False, min_width=70)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("interactions published", f"{self.published:,} of {len(self.world.interactions):,}")
        table.add_row("interactions in user state", f"{watch.applied:,} ({watch.rate():,.0f} events/s)")
        served = self.state.triton is not None
        table.add_row("consumer lag", describe_lag(self.settings, self.lag or {}, model_served=served))
        table.add_row("items enriched", f"{len(watch.knowledge):,} of {len(self.world.items):,}")
        table.add_row("users with inferred interests", f"{len(watch.interests):,} of {users:,}")
        table.add_row("users with reasoning steps", f"{len(watch.reasoning):,} of {users:,}")
        table.add_row(
            "dead letters", ", ".join(f"{reason} {count}" for reason, count in watch.dead_letters.items()) or "0"
        )
        table.add_row("model version", self.model_version())
        return table

    def until(
        self, console: Console, done: Callable[[], bool], phase: str, step: Callable[[], None] | None = None
    ) -> float:
        """Show the live view until ``done``, calling ``step`` each frame; returns the seconds it took. Stops with a
        StackError naming the process when one of the stack's cannot stay up, or when the phase times out."""
        self.phase, started = phase, time.monotonic()
        with Live(self.view(), console=console, refresh_per_second=4) as live:
            while not done():
                if (failure := stack_failure(self.settings)) is not None:
                    raise StackError(f"demo phase '{phase}' stopped: {failure}")
                if time.monotonic() - started > PHASE_TIMEOUT_S:
                    raise StackError(
                        f"demo phase '{phase}' did not finish in {PHASE_TIMEOUT_S:.0f} s (logs: {self.settings.state_dir}/run)"
                    )
                if step:
                    step()
                self.refresh()
                live.update(self.view())
        if not console.is_terminal:  # rich ends a Live's last frame with a newline on a terminal only
            console.line()
        return time.monotonic() - started


def run_demo(settings: Settings, n_items: int, n_users: int, n_events: int, rate: float, console: Console) -> bool:
    """Run the whole pipeline on a generated world and print what it did; stops everything it started.
    Returns whether every part finished."""
    root = settings.state_dir / "demo"
    settings = settings.model_copy(update={"state_dir": root / "state", "model_store": root / "model_store"})
    world = generate(n_items, n_users, n_events)
    split = int(len(world.interactions) * (1 - LIVE_SHARE))
    history, live_events = world.interactions[:split], world.interactions[split:]
    stop_stack(settings)  # a demo interrupted before it could stop its own
    shutil.rmtree(root, ignore_errors=True)  # the embedded broker starts empty: so must every store
    try:
        state = start_stack(settings, workers=2, generation=1, serve=False)
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        return False
    console.print(
        f"broker {state.bootstrap}; stream workers, enrichment and interest workers running (logs in {settings.state_dir}/run)"
    )
    if state.web:
        console.print(f"watch it on the operator page: {state.web.url}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so `finally` stops the stack
    watch = PipelineWatch(settings, state.bootstrap)
    run = DemoRun(settings, state, world, watch)
    try:
        _stream_history(run, history, console)
        _train_and_serve(run, console)
        live_seconds = _stream_live(run, live_events, rate, console)
        console.print(_summary(run, len(history), live_seconds))
        return True
    except (StackError, TritonError) as exc:
        console.print(f"[red]{exc}[/red]")
        return False
    finally:
        watch.close()
        stop_stack(settings)
        console.print("stopped Triton, the workers and the broker")


def _stream_history(run: DemoRun, history: list[Interaction], console: Console) -> None:
    settings, bootstrap, world = run.settings, run.state.bootstrap, run.world
    late = world.items[: len(world.items) // 10]  # published after their interactions: held pending, then resolved
    expected = len(history)  # each generated interaction is distinct: each adds one to its user's version
    with console.status("publishing the catalog and the history"):
        publish_lines(settings, bootstrap, "items", (encode(i) for i in world.items[len(late) :]), "demo")
        publish_lines(settings, bootstrap, "events", [encode(i) for i in history] + BAD_RECORDS, "demo", validate=False)
        publish_lines(settings, bootstrap, "items", (encode(i) for i in late), "demo")
    run.published = len(history)
    seconds = run.until(
        console,
        lambda: run.watch.applied >= expected and len(run.watch.knowledge) >= len(world.items),
        "catalog and history streaming in; items being enriched",
    )
    console.print(
        f"part 1: {len(world.items):,} items ({len(late)} published after their interactions) and {len(history):,} interactions "
        f"in state and enriched in {seconds:.1f} s; {len(BAD_RECORDS)} bad records dead-lettered"
    )


def _train_and_serve(run: DemoRun, console: Console) -> None:
    console.print(
        "part 2: training a small distilled ranker and interest model from the topics (a few minutes on a CPU)"
    )
    started = time.monotonic()
    version = train(
        small_config(run.settings.state_dir / "topics"),
        run.settings.model_store,
        run.settings.state_dir,
        load_from_topics(run.settings, run.state.bootstrap),
    )
    console.print(f"trained {version.name} in {time.monotonic() - started:.0f} s")
    with console.status("starting Triton with it (the replica catches up with the feature topics before it is ready)"):
        start_serving(run.settings, run.state, version)
    seconds = run.until(
        console,
        lambda: len(run.watch.interests) >= len(run.watch.users),
        "the interest worker infers every user's interests",
    )
    console.print(
        f"every user's beyond-log interests and reasoning steps inferred with the new model in {seconds:.1f} s"
    )


def _stream_live(run: DemoRun, live_events: list[Interaction], rate: float, console: Console) -> float:
    """Offer the remaining interactions at ``rate`` per second; returns how long until all are reflected."""
    settings, bootstrap = run.settings, run.state.bootstrap
    versions = {user: update.version for user, update in run.watch.users.items()}
    pending = list(live_events)

    def offer() -> None:
        due = min(len(live_events), int((time.monotonic() - started) * rate)) - (len(live_events) - len(pending))
        batch, pending[:] = pending[:due], pending[due:]
        if not batch:
            return
        now = time.monotonic()
        for event in batch:
            versions[event.user_id] = versions.get(event.user_id, 0) + 1
            run.watch.state_freshness.expect(event.user_id, versions[event.user_id], now)
            run.watch.interest_freshness.expect(event.user_id, versions[event.user_id], now)
        publish_lines(settings, bootstrap, "events", (encode(e) for e in batch), "demo-live")
        run.published += len(batch)

    def caught_up() -> bool:
        watch = run.watch
        state_done = all(getattr(watch.users.get(u), "version", 0) >= v for u, v in versions.items())
        interests_done = all(
            getattr(watch.interests.get(u), "history_version", 0) >= versions[u]
            for u in {e.user_id for e in live_events}
        )
        return not pending and state_done and interests_done

    started = time.monotonic()
    seconds = run.until(console, caught_up, f"streaming live interactions at {rate:,.0f}/s", step=offer)
    console.print(
        f"part 3: {len(live_events):,} live interactions offered at {rate:,.0f}/s, all in state and interests in {seconds:.1f} s"
    )
    return seconds


def _summary(run: DemoRun, n_history: int, live_seconds: float) -> Group:
    watch, world = run.watch, run.world
    titles = {item.item_id: f"{item.title} [{item.categories[0]}]" for item in world.items}
    figures = Table(title="summary", show_header=False)
    figures.add_column(style="bold")
    figures.add_column()
    figures.add_row(
        "interactions",
        f"{watch.applied:,} in user state of {len(world.interactions):,} published; {n_history:,} as a backlog, the rest live",
    )
    figures.add_row(
        "live throughput", f"{len(world.interactions) - n_history:,} interactions reflected in {live_seconds:.1f} s"
    )
    figures.add_row("freshness: event -> user state", watch.state_freshness.summary())
    figures.add_row(
        "freshness: event -> beyond-log interests",
        watch.interest_freshness.summary() + f" (debounce {run.settings.interest_debounce_s:g} s)",
    )
    figures.add_row("items enriched", f"{len(watch.knowledge):,}")
    figures.add_row("users with interests / reasoning steps", f"{len(watch.interests):,} / {len(watch.reasoning):,}")
    figures.add_row(
        "dead letters", ", ".join(f"{reason} {count}" for reason, count in watch.dead_letters.items()) or "0"
    )
    assert run.state.triton is not None
    client = RankClient(run.state.triton.endpoints().grpc_url, "grpc")
    busiest = sorted(watch.interests, key=lambda user: -watch.users[user].version)[:3]
    panels = [_user_panel(user, run, titles, client) for user in busiest]
    item = next(iter(watch.knowledge.values()))
    chain = "\n".join(
        f"[bold]{name}[/bold]: {_fields(step.model_dump(mode='json', exclude={'rationale'}))}"
        for name, step in item.chain.steps()
    )
    return Group(figures, Panel(chain, title=f"an item's reasoning chain: {titles[item.item_id]}"), *panels)


def _fields(step: dict[str, object]) -> str:
    return "; ".join(
        f"{name} " + (", ".join(map(str, value)) if isinstance(value, list) else str(value))
        for name, value in step.items()
    )


def _user_panel(user: str, run: DemoRun, titles: dict[str, str], client: RankClient) -> Panel:
    watch = run.watch
    answer = client.rank(user, k=5)
    reasoning = watch.reasoning.get(user)
    lines = [f"[bold]planted interests[/bold]: {', '.join(run.world.interests[user])}", "[bold]recent history[/bold]:"]
    lines += [f"  {entry.kind.value} {titles[entry.item_id]}" for entry in watch.users[user].history[-5:]]
    lines.append("[bold]reasoning steps[/bold] (the mined pattern, filled near-line):")
    lines += [f"  {i}. {text}" for i, text in enumerate(reasoning.steps, 1)] if reasoning else ["  -"]
    lines.append("[bold]beyond-log interests[/bold] (diffusion model):")
    lines += [f"  {titles[i.item_id]} ({i.confidence:.2f})" for i in watch.interests[user].interests[:5]]
    lines.append(f"[bold]recommendations[/bold] (Triton, {answer.source.value}, model {answer.model_version}):")
    lines += [f"  {n}. {titles.get(i.item_id, i.item_id)} ({i.score:.2f})" for n, i in enumerate(answer.items, 1)]
    return Panel("\n".join(lines), title=user)
