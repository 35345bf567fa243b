"""Fleet runs on Ray (``harness run --ray [ADDRESS]``, docs/fleet.md): a suite's cells as
Ray tasks on the nodes of a cluster, the results written home by this driver.

* **Where cells run.** With ``targets`` in the suite (:class:`harness.core.suite.Target`)
  every cell runs once on each target: on a Ray node whose resources are at least the
  target's ``resources`` and whose labels include its ``node_labels``. Without targets
  the cells are sharded over all alive nodes (each cell once; CUDA cells only on nodes
  where Ray sees a GPU, TPU cells only where it sees a TPU). Nodes that advertise no
  CPU (a head node started with ``--num-cpus=0``) never run cells.
* **Exclusive measurement.** At most one cell per node at a time, enforced twice: the
  driver keeps at most one task in flight per node, and each task is pinned to its node
  (hard ``NodeAffinitySchedulingStrategy``) and asks for *all* of that node's CPUs and
  accelerators (plus one ``dl_harness_slot`` where the node declares that resource).
  The second half needs no cluster configuration and also keeps any other Ray task that
  declares resources -- another harness driver included -- off the node while a cell
  runs. Inside the task the cell still runs in a fresh worker process of its own
  (:mod:`harness.launch.ray_node`, :class:`~harness.launch.process.ProcessLauncher`).
* **Results.** Cell records come back to the driver, which writes one result file per
  (target, node) -- one per machine -- with that node's own environment block
  (collected on the node by the function a local run uses), so ``report``, ``compare``,
  ``procurement`` and ``export`` read them unchanged. Each file is rewritten after
  every cell. A target without a matching node gets a file whose cells are all
  ``skipped`` with the reason. Each cell records ``runtime.fleet`` (target, node id,
  host name, start and end on the node's clock, the driver's wall time for it).
* **Failures.** A node that dies during a cell (Ray's ``NodeDiedError``,
  ``WorkerCrashedError``, ``ActorDiedError``, ...) makes that cell ``failed`` with the
  reason ``node lost: ...``; the other cells go on, on the nodes left. Ctrl-C, SIGTERM
  or SIGHUP cancel the running tasks (their workers are killed) and keep every finished
  cell; the files are marked ``interrupted``.

Ray is optional: this module imports it only inside :func:`connect`; ``harness run``
without ``--ray`` never imports this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.core import repeats
from harness.core.cells import Settings, TaskSpec, empty_cell, failed_cell
from harness.core.environment import harness_info
from harness.core.suite import Suite, Target
from harness.errors import UserError
from harness.launch.base import set_launch
from harness.launch.distributed import attach_scaling, sweep_worker_threads
from harness.launch.runner import ResultWriter, RunOutcome, new_document, terminate_as_interrupt
from harness.store import results

SLOT_RESOURCE = "dl_harness_slot"  # optional per-node resource (1 per node): honoured where declared
ACCELERATOR_RESOURCES = ("GPU", "TPU", "NPU", "HPU", "neuron_cores")  # asked for in full by every cell task
NODE_LOST = "node lost"
#: Ray errors that mean the node itself is gone (not just the worker process)
NODE_GONE_ERRORS = ("NodeDiedError", "LocalRayletDiedError", "TaskUnschedulableError")
UNPLACED = "fleet-unplaced"  # runtime.launch.method of a cell no node could take
CONNECT_TIMEOUT_S = 60.0  # ray.init against a reachable address that never answers
PROBE_TIMEOUT_S = 5.0  # TCP check of HOST:PORT before ray.init (which retries for minutes)
ENV_TIMEOUT_S = 120.0  # a node that cannot report its environment by then is left out
POLL_S = 0.2
NODE_REFRESH_S = 1.0
LOST_GRACE_S = 30.0  # a task on a node Ray reports dead that still has not failed by then is given up
CANCEL_WAIT_S = 10.0


class FleetError(UserError):
    """A fleet run cannot start (Ray missing, a bad address, nothing to run on): one line, exit 2."""


# ----------------------------------------------------------------------------- connecting


def connect(address: str | None) -> Any:
    """``ray.init`` for ``--ray [ADDRESS]`` and return the ``ray`` module.

    ``ADDRESS`` as Ray takes it: ``HOST:PORT`` (the head node's GCS port), ``ray://HOST:PORT``
    (Ray Client), ``auto`` (the cluster this machine belongs to; an error when there is
    none) or ``local`` (a new single-node Ray on this machine). Without an address, Ray's
    own rule: ``$RAY_ADDRESS``, else the cluster last started on this machine, else a
    new local one. A ``HOST:PORT`` is first checked with a TCP connect (``ray.init``
    retries an unreachable address for minutes), and connecting is bounded by
    :data:`CONNECT_TIMEOUT_S`; every failure is one :class:`FleetError` line."""
    shown = f"--ray {address}" if address else "--ray"
    try:
        import ray
    except ImportError as e:
        raise FleetError(f"{shown}: Ray is not installed here ({e}); install it with "
                         "pip install 'ray==2.60.0' (docs/fleet.md)") from None
    addr = address or None
    if addr not in (None, "auto", "local"):
        _probe(addr, shown)
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if addr in (None, "local"):
        kwargs["include_dashboard"] = False
    try:
        with _deadline(CONNECT_TIMEOUT_S, shown):
            ray.init(address=addr, **kwargs)
    except FleetError:
        raise
    except (ConnectionError, ValueError, RuntimeError, TimeoutError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FleetError(f"{shown}: cannot connect to a Ray cluster: {first}") from None
    return ray


def _probe(addr: str, shown: str) -> None:
    """A TCP connect to the ``HOST:PORT`` of ``addr`` (``ray://`` stripped)."""
    hostport = addr.split("://", 1)[1] if "://" in addr else addr
    host, sep, port_text = hostport.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FleetError(f"{shown}: not a Ray address; give HOST:PORT (the head node's GCS port, "
                         "default 6379), ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, int(port_text)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        cause = e.strerror or str(e) or type(e).__name__
        raise FleetError(f"{shown}: cannot reach {host}:{port_text} ({cause}); is the Ray head node "
                         "running and its GCS port (default 6379) reachable from here?") from None


@contextlib.contextmanager
def _deadline(seconds: float, shown: str) -> Iterator[None]:
    """Raise :class:`FleetError` when the body takes longer than ``seconds`` (SIGALRM;
    a no-op outside the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise FleetError(f"{shown}: no answer from the Ray cluster within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- nodes and targets


@dataclass
class Node:
    """A Ray node as ``ray.nodes()`` describes it."""

    node_id: str
    hostname: str
    ip: str
    resources: dict[str, float]
    labels: dict[str, str]
    alive: bool

    @property
    def name(self) -> str:
        """``host/abcd1234``: the host name and the start of Ray's node id."""
        return f"{self.hostname}/{self.node_id[:8]}"

    @property
    def usable(self) -> bool:
        """Alive and advertising CPUs (a node with ``CPU: 0`` is kept free of work by its operator)."""
        return self.alive and self.resources.get("CPU", 0) > 0

    def has(self, resource: str) -> bool:
        return self.resources.get(resource, 0) > 0

    def task_options(self) -> dict[str, Any]:
        """Ray options of a cell task: pinned to this node, holding all of its CPUs and
        accelerators (and its ``dl_harness_slot``), never retried (a retry would be a
        second measurement of a cell that may have half-run)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        custom = {r: self.resources[r] for r in ACCELERATOR_RESOURCES if r != "GPU" and self.has(r)}
        if self.has(SLOT_RESOURCE):
            custom[SLOT_RESOURCE] = 1
        return {
            "num_cpus": self.resources.get("CPU", 0),
            "num_gpus": self.resources.get("GPU", 0),
            "resources": custom,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            "max_retries": 0,
            "retry_exceptions": False,
        }

    def to_record(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "hostname": self.hostname, "ip": self.ip,
                "resources": dict(self.resources), "labels": dict(self.labels)}


def parse_nodes(raw: list[dict[str, Any]]) -> list[Node]:
    """``ray.nodes()`` as :class:`Node` objects."""
    out = []
    for n in raw:
        labels = {str(k): str(v) for k, v in (n.get("Labels") or {}).items() if not str(k).startswith("ray.io/")}
        out.append(Node(node_id=str(n.get("NodeID")), hostname=str(n.get("NodeManagerHostname") or "?"),
                        ip=str(n.get("NodeManagerAddress") or "?"),
                        resources={str(k): float(v) for k, v in (n.get("Resources") or {}).items()},
                        labels=labels, alive=bool(n.get("Alive"))))
    return out


def target_matches(target: Target, node: Node) -> bool:
    """Whether ``node`` is ``target``: every resource at least the target's amount, every label equal."""
    return (all(node.resources.get(k, 0) >= v for k, v in target.resources.items())
            and all(node.labels.get(k) == v for k, v in target.node_labels.items()))


def describe_target(target: Target) -> str:
    parts = []
    if target.resources:
        parts.append("resources " + ", ".join(f"{k}>={v:g}" for k, v in target.resources.items()))
    if target.node_labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in target.node_labels.items()))
    return "; ".join(parts)


def needs(spec: TaskSpec) -> str | None:
    """The Ray resource a cell's device needs on a node (``GPU``, ``TPU``), or None."""
    if spec.device.startswith("cuda"):
        return "GPU"
    if spec.device.startswith("tpu"):
        return "TPU"
    return None


# ----------------------------------------------------------------------------- the run


@dataclass
class _Group:
    """The cells of one target (or of the whole cluster when sharding, ``target`` None)."""

    name: str  # the target's name; "cluster" when sharding
    target: Target | None
    nodes: list[str]  # candidate node ids
    total: int  # (cell, process) items
    pending: list[tuple[int, int]] = field(default_factory=list)
    assigned: dict[int, str] = field(default_factory=dict)  # cell index -> the node running all its processes
    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    running: set[int] = field(default_factory=set)
    done: int = 0
    primary: tuple[str, str | None] | None = None  # the file that lists unassigned cells as not run
    task: Any = None  # the progress bar


@dataclass
class _File:
    key: tuple[str, str | None]  # (group name, node id or None for a target without a node)
    group: _Group
    node: Node | None
    doc: dict[str, Any]
    path: Path
    writer: ResultWriter
    calibration: dict[str, Any] | None
    indices: set[int] = field(default_factory=set)  # cells assigned to this file
    merged: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Running:
    ref: Any
    group: _Group
    index: int
    repeat: int
    node: Node
    submitted: float  # time.time() on the driver


@dataclass
class FleetOutcome:
    """What :func:`run_fleet` did: one :class:`~harness.launch.runner.RunOutcome` per
    result file (target x node), in target then node order."""

    outcomes: list[RunOutcome]
    interrupted: bool = False
    address: str = ""

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for o in self.outcomes:
            for k, v in o.counts.items():
                total[k] = total.get(k, 0) + v
        return total


def run_fleet(suite: Suite, cells: list[TaskSpec], out_dir: Path, address: str | None, tag: str | None = None,
              show_progress: bool = True) -> FleetOutcome:
    """Run ``cells`` on the Ray cluster at ``address`` (:func:`connect`) and write one
    result file per (target, node) under ``out_dir``. Raises :class:`FleetError` when
    the run cannot start; never raises for a cell."""
    if suite.settings.nnodes > 1:
        raise FleetError("--ray runs each cell on one node; multi-node torchrun cells (nnodes > 1) are not "
                         "supported with --ray (run them with --nnodes/--rdzv-endpoint instead)")
    ray = connect(address)
    try:
        run = _FleetRun(ray, suite, cells, out_dir, tag, show_progress, address or "")
        return run.run()
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


class _FleetRun:
    def __init__(self, ray: Any, suite: Suite, cells: list[TaskSpec], out_dir: Path, tag: str | None,
                 show_progress: bool, address: str) -> None:
        from rich.console import Console

        self.ray, self.suite, self.cells, self.out_dir, self.tag = ray, suite, cells, out_dir, tag
        self.address = address
        self.shown = f"--ray {address}" if address else "--ray"
        self.planned = max(1, int(suite.settings.repeats))
        self.console = Console(stderr=True)
        self.show_progress = show_progress
        self.files: dict[tuple[str, str | None], _File] = {}
        self.running: dict[str, _Running] = {}  # node id -> its task
        self.lost: dict[str, float] = {}  # node id -> when the driver saw it dead
        self.envs: dict[str, dict[str, Any]] = {}  # node id -> {environment, harness, node}
        self.nodes: dict[str, Node] = {}
        self.groups: list[_Group] = []
        self.interrupted = False
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console)

    # -- output
    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _node_lines(self) -> Any:
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        now = time.time()
        for nid in sorted({n for g in self.groups for n in g.nodes}, key=lambda n: self.nodes[n].name):
            node, job = self.nodes[nid], self.running.get(nid)
            if nid in self.lost:
                what = "[red]lost[/]"
            elif job is not None:
                what = f"[{job.group.name}] {self.cells[job.index].id}" + (
                    f" (process {job.repeat + 1}/{self.planned})" if self.planned > 1 else "") + \
                    f"  {now - job.submitted:.0f} s"
            else:
                what = "idle"
            grid.add_row(f"  {node.name}", what)
        return grid

    # -- the run
    def run(self) -> FleetOutcome:
        from rich.console import Group as RenderGroup
        from rich.live import Live

        restore = terminate_as_interrupt()  # ray.init installs a SIGTERM handler that would just exit
        live = None
        try:
            try:
                self._plan()
                if self.show_progress:
                    live = Live(get_renderable=lambda: RenderGroup(self.progress, self._node_lines()),
                                console=self.console, refresh_per_second=4, transient=False)
                    live.start()
                self._loop()
            except KeyboardInterrupt:
                self.interrupted = True
                self._cancel_all()
        finally:
            if live is not None:
                live.stop()
            restore()
        return self._finish()

    def _plan(self) -> None:
        self.nodes = {n.node_id: n for n in parse_nodes(self.ray.nodes())}
        usable = [n for n in self.nodes.values() if n.usable]
        if not usable:
            alive = sum(1 for n in self.nodes.values() if n.alive)
            raise FleetError(f"{self.shown}: the Ray cluster has no alive node with CPUs to run cells on "
                             f"({alive} alive node(s), none advertising CPU)")
        order = repeats.schedule(self.cells, self.planned, seed=self.suite.settings.seed)
        if self.suite.targets:
            for t in self.suite.targets:
                g = _Group(name=t.name, target=t, nodes=[n.node_id for n in usable if target_matches(t, n)],
                           total=len(order), pending=list(order))
                self.groups.append(g)
        else:
            self.groups.append(_Group(name="cluster", target=None, nodes=[n.node_id for n in usable],
                                      total=len(order), pending=list(order)))
        for g in self.groups:
            g.task = self.progress.add_task(f"{g.name}", total=g.total)
        self._collect_environments(sorted({n for g in self.groups for n in g.nodes}))
        for g in self.groups:
            if g.target is not None and not g.nodes:
                self._skip_group(g, f"no alive Ray node matches target {g.name!r} ({describe_target(g.target)}); "
                                    f"alive nodes: {self._alive_summary()}")
        self._settle()

    def _alive_summary(self) -> str:
        alive = [n for n in self.nodes.values() if n.alive]
        return "; ".join(f"{n.name} [{', '.join(f'{k}={v:g}' for k, v in sorted(n.resources.items()) if not k.startswith(('node:', 'memory', 'object_store')))}]"
                         + (f" labels {n.labels}" if n.labels else "") for n in alive[:8]) + (
            f"; ... {len(alive) - 8} more" if len(alive) > 8 else "")

    def _collect_environments(self, node_ids: list[str]) -> None:
        """Each node's environment, collected on the node (in parallel); a node that
        cannot report in :data:`ENV_TIMEOUT_S` is left out, with a warning."""
        from harness.launch import ray_node

        remote = self.ray.remote(ray_node.node_environment)
        refs = {remote.options(**self.nodes[nid].task_options()).remote(): nid for nid in node_ids}
        deadline = time.monotonic() + ENV_TIMEOUT_S
        pending = list(refs)
        while pending and time.monotonic() < deadline:
            ready, pending = self.ray.wait(pending, num_returns=1, timeout=max(0.1, deadline - time.monotonic()))
            for ref in ready:
                nid = refs[ref]
                try:
                    self.envs[nid] = self.ray.get(ref)
                except Exception as e:  # noqa: BLE001 - any Ray error: the node is left out
                    self.say(f"warning: node {self.nodes[nid].name} could not report its environment "
                             f"({type(e).__name__}); it runs no cells")
        for ref in pending:
            self.say(f"warning: node {self.nodes[refs[ref]].name} did not report its environment within "
                     f"{ENV_TIMEOUT_S:g} s (busy with other Ray work?); it runs no cells")
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        mine = harness_info()
        for nid, env in self.envs.items():
            theirs = env.get("harness") or {}
            if (theirs.get("version"), theirs.get("git_commit")) != (mine.get("version"), mine.get("git_commit")):
                self.say(f"warning: node {self.nodes[nid].name} runs dl-harness {theirs.get('version')} "
                         f"({theirs.get('git_commit')}), this driver {mine.get('version')} ({mine.get('git_commit')}); "
                         "its cells are measured by its own copy")
        for g in self.groups:
            g.nodes = [n for n in g.nodes if n in self.envs]

    def _loop(self) -> None:
        from harness.launch import ray_node

        remote = self.ray.remote(ray_node.run_cell)
        last_refresh = 0.0
        idle_rounds = 0
        while True:
            for nid in sorted(self._free_nodes(), key=lambda n: self.nodes[n].name):
                item = self._next_item(nid)
                if item is None:
                    continue
                g, i, r = item
                self._dispatch(remote, g, i, r, self.nodes[nid])
            if not self.running:
                idle_rounds += 1
                if not self._settle() or idle_rounds > 3:  # nothing left, or nothing any node can start
                    break
                continue
            idle_rounds = 0
            refs = [job.ref for job in self.running.values()]
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
            for ref in ready:
                nid = next(n for n, job in self.running.items() if job.ref is ref)
                self._collect(nid)
            if time.monotonic() - last_refresh > NODE_REFRESH_S:
                last_refresh = time.monotonic()
                self._refresh_nodes()

    def _free_nodes(self) -> list[str]:
        return [nid for nid in {n for g in self.groups for n in g.nodes}
                if nid not in self.running and nid not in self.lost]

    def _eligible(self, g: _Group, i: int, nid: str) -> bool:
        if g.target is not None:
            return True  # a target is the user's choice: the node's own precheck skips what it cannot run
        need = needs(self.cells[i])
        return need is None or self.nodes[nid].has(need)

    def _next_item(self, nid: str) -> tuple[_Group, int, int] | None:
        for g in self.groups:
            if nid not in g.nodes:
                continue
            for k, (i, r) in enumerate(g.pending):
                if i in g.stopped or i in g.running:
                    continue
                owner = g.assigned.get(i)
                if owner is not None and owner != nid:
                    continue
                if owner is None and not self._eligible(g, i, nid):
                    continue
                del g.pending[k]
                return g, i, r
        return None

    def _dispatch(self, remote: Any, g: _Group, i: int, r: int, node: Node) -> None:
        spec = self.cells[i]
        settings = self._node_settings(node.node_id)
        f = self._file(g, node)
        g.assigned[i] = node.node_id
        g.running.add(i)
        f.indices.add(i)
        fleet = {"target": g.target.name if g.target else None, "submitted_unix": time.time()}
        ref = remote.options(**node.task_options()).remote(spec, settings, fleet)
        self.running[node.node_id] = _Running(ref=ref, group=g, index=i, repeat=r, node=node,
                                              submitted=fleet["submitted_unix"])
        self._save(f)

    def _node_settings(self, nid: str) -> Settings:
        """The suite's settings with the threads per CPU data-parallel worker of this node's cores."""
        s = self.suite.settings
        if s.worker_threads is not None:
            return s
        cpu = (self.envs[nid].get("environment") or {}).get("cpu") or {}
        cores = cpu.get("affinity_cores") or cpu.get("logical_cores")
        wt = sweep_worker_threads(self.cells, s, cpu_count=int(cores) if cores else None)
        return s if wt is None else dataclasses.replace(s, worker_threads=wt)

    def _collect(self, nid: str) -> None:
        job = self.running.pop(nid)
        g, i = job.group, job.index
        g.running.discard(i)
        ended = time.time()
        try:
            record = self.ray.get(job.ref)
            if isinstance(record.get("runtime"), dict) and isinstance(record["runtime"].get("fleet"), dict):
                record["runtime"]["fleet"]["driver_wall_s"] = ended - job.submitted
        except Exception as e:  # noqa: BLE001 - every Ray error is this cell's failure, never the run's
            if type(e).__name__ in NODE_GONE_ERRORS:
                self._mark_lost(job.node.node_id)
            if type(e).__name__ == "TaskUnschedulableError":  # never started: another node may take it
                g.pending.insert(0, (i, job.repeat))
                if not g.records.get(i):
                    g.assigned.pop(i, None)
                    self.files[(g.name, job.node.node_id)].indices.discard(i)
                self._settle()
                return
            record = self._lost_cell(job, e, ended)
        self._record(g, i, record, job.node)

    def _mark_lost(self, nid: str) -> None:
        if nid not in self.lost:
            self.lost[nid] = time.time()
            self.say(f"warning: node {self.nodes[nid].name} is lost; its running cell (if any) fails with "
                     f"'{NODE_LOST}', the other cells go on")

    def _lost_cell(self, job: _Running, e: BaseException, ended: float, refresh: bool = True) -> dict[str, Any]:
        """The failed record of a cell whose task did not come back."""
        from ray import exceptions as rex

        lost_types = tuple(getattr(rex, n) for n in ("NodeDiedError", "WorkerCrashedError", "ActorDiedError",
                                                      "LocalRayletDiedError", "ObjectLostError",
                                                      "TaskUnschedulableError") if hasattr(rex, n))
        first = (str(e).strip().splitlines() or [""])[0][:300]
        if isinstance(e, lost_types):
            if refresh:
                self._refresh_nodes()
            if job.node.node_id in self.lost:
                reason = f"{NODE_LOST}: {job.node.name} died during the cell ({type(e).__name__})"
            else:
                reason = (f"{NODE_LOST}: the Ray worker running the cell on {job.node.name} died during it "
                          f"({type(e).__name__}; the node is still alive)")
            kind = "NodeLost"
        else:
            reason = f"the Ray task on {job.node.name} failed: {type(e).__name__}: {first}"
            kind = "RayTaskFailed"
        cell = failed_cell(self.cells[job.index], kind, reason, ended - job.submitted, stderr_tail=first,
                           returncode=None)
        cell["runtime"]["fleet"] = {"target": job.group.target.name if job.group.target else None,
                                    "node_id": job.node.node_id, "hostname": job.node.hostname,
                                    "submitted_unix": job.submitted, "driver_wall_s": ended - job.submitted,
                                    "source": "driver"}
        return cell

    def _record(self, g: _Group, i: int, record: dict[str, Any], node: Node | None) -> None:
        from harness.core.flops import apply_calibration

        g.records.setdefault(i, []).append(record)
        g.done += 1
        if record.get("status") != "ok" and not record.get("recorded_elsewhere"):
            if i not in g.stopped:
                g.stopped.add(i)
                left = sum(1 for (j, _) in g.pending if j == i)
                g.pending = [(j, r) for (j, r) in g.pending if j != i]
                g.done += left
        f = self._file(g, node)
        f.indices.add(i)
        spec = self.cells[i]
        cell = repeats.merge(g.records[i], self.planned, spec.global_batch_size)
        apply_calibration(cell, f.calibration)
        for entry in cell.get("repeats") or []:
            apply_calibration({**entry, "spec": cell["spec"]}, f.calibration)
        f.merged[i] = cell
        self._save(f)
        self.progress.update(g.task, completed=g.done)
        self.say(_cell_line(g.name, node, record))

    def _skip_group(self, g: _Group, reason: str, only: set[int] | None = None) -> None:
        """Skip ``g``'s unassigned cells (``only``: these) with ``reason``."""
        idx = [i for i in dict.fromkeys(i for i, _ in g.pending) if i not in g.assigned and (only is None or i in only)]
        for i in idx:
            cell = empty_cell(self.cells[i])
            cell["status"], cell["reason"], cell["duration_s"] = "skipped", reason, 0.0
            set_launch(cell, UNPLACED, "skipped by the fleet driver: no Ray node could take the cell")
            g.pending = [(j, r) for (j, r) in g.pending if j != i]
            g.stopped.add(i)
            g.done += self.planned - 1
            home = self.nodes.get(g.nodes[0]) if g.nodes else None
            self._record(g, i, cell, home)

    def _settle(self) -> bool:
        """Skip what no alive node can take; True when work is left that a free node can start."""
        for g in self.groups:
            alive = [n for n in g.nodes if n not in self.lost]
            stuck: set[int] = set()
            for i, _ in g.pending:
                owner = g.assigned.get(i)
                if owner is not None and owner in self.lost:
                    stuck.add(i)
                elif owner is None and not any(self._eligible(g, i, n) for n in alive):
                    stuck.add(i)
            lost_names = ", ".join(self.nodes[n].name for n in g.nodes if n in self.lost)
            for i in sorted(stuck):
                if i in g.assigned:  # later processes of a cell whose node was lost: not run
                    left = sum(1 for (j, _) in g.pending if j == i)
                    g.pending = [(j, r) for (j, r) in g.pending if j != i]
                    g.stopped.add(i)
                    g.done += left
            for i in sorted(i for i in stuck if i not in g.assigned):
                if not alive and g.nodes:
                    why = f"every node of {g.name!r} was lost ({lost_names})"
                elif g.target is None:
                    why = (f"no alive node of the Ray cluster has the {needs(self.cells[i])} resource "
                           f"this cell's device needs ({self._alive_summary()})")
                else:
                    why = f"no alive Ray node matches target {g.name!r}"
                self._skip_group(g, why, only={i})
            self.progress.update(g.task, completed=g.done)
        return any(g.pending for g in self.groups)

    def _refresh_nodes(self) -> None:
        try:
            fresh = {n.node_id: n for n in parse_nodes(self.ray.nodes())}
        except Exception:  # noqa: BLE001 - GCS busy: next time
            return
        now = time.time()
        for nid, node in self.nodes.items():
            if nid in self.lost:
                continue
            if not (fresh.get(nid) and fresh[nid].alive):
                self._mark_lost(nid)
        for nid, job in list(self.running.items()):  # a task Ray never fails: give it up
            if nid in self.lost and now - self.lost[nid] > LOST_GRACE_S:
                with contextlib.suppress(Exception):
                    self.ray.cancel(job.ref, force=True)
                self.running.pop(nid)
                job.group.running.discard(job.index)
                self._record(job.group, job.index, self._lost_cell(job, self._node_died(), now, refresh=False),
                             job.node)
        self._settle()

    def _node_died(self) -> BaseException:
        from ray import exceptions as rex

        return rex.NodeDiedError("the node was reported dead and its task never returned")

    def _cancel_all(self) -> None:
        """Cancel the running tasks (their cell workers are killed) and wait briefly for them."""
        refs = [job.ref for job in self.running.values()]
        for ref in refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=False)
        try:
            if refs:
                self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        except (KeyboardInterrupt, Exception):  # noqa: BLE001 - a second Ctrl-C: force
            pass
        for ref in refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        for job in self.running.values():
            job.group.running.discard(job.index)
        self.running.clear()

    # -- files
    def _file(self, g: _Group, node: Node | None) -> _File:
        key = (g.name, node.node_id if node is not None else None)
        f = self.files.get(key)
        if f is not None:
            return f
        doc = new_document(self.suite, self.cells, self.tag)
        if node is not None:
            env = self.envs[node.node_id]
            doc["environment"], doc["harness"] = env["environment"], env["harness"]
            host = f"{g.name}-{node.hostname}" if g.target else f"{node.hostname}-{node.node_id[:6]}"
        else:  # a target no node matched: no machine to describe
            doc["environment"] = {"host": f"(no node for target {g.name})", "os": None, "python": None, "cpu": {},
                                  "memory_bytes": None, "gpus": [], "gpus_reason": "no Ray node matched the target",
                                  "fingerprint": None}
            host = f"{g.name}-unmatched"
        doc["fleet"] = {
            "ray_address": self.address or None,
            "target": g.target.to_record() if g.target else None,
            "node": node.to_record() if node is not None else None,
            "driver": {"host": socket.gethostname(), "harness": harness_info()},
            "exclusive": "one cell at a time per node: the driver keeps one task in flight per node, pinned to it "
                         "(hard node affinity) and holding all its CPUs and accelerators",
        }
        if self.planned > 1:
            doc["measurement_order"] = {
                "method": "randomised multiple interleaved trials per target: each round runs every cell once in a "
                          "shuffled order, one fresh worker process per cell and round, all processes of a cell on "
                          "the same node",
                "rounds": self.planned, "seed": self.suite.settings.seed,
            }
        calibration = None
        fp = doc["environment"].get("fingerprint")
        if fp:
            from harness.core.calibrate import default_dirs, find_calibration

            calibration = find_calibration(fp, default_dirs(self.out_dir))
            if calibration:
                doc["calibration"] = calibration
        try:
            path, _ = results.claim_path(self.out_dir, results.new_run_id(host=host), doc)
        except (OSError, results.ResultFileError) as e:
            raise FleetError(f"cannot write results to {self.out_dir}: {e}; choose another --out") from None
        f = _File(key=key, group=g, node=node, doc=doc, path=path, writer=ResultWriter(path, say=self.say),
                  calibration=calibration)
        self.files[key] = f
        if g.primary is None:
            g.primary = key
        return f

    def _save(self, f: _File, final: bool = False) -> None:
        g, doc = f.group, f.doc
        doc["cells"] = [f.merged[j] for j in sorted(f.merged)]
        if any(self.cells[j].world_size is not None for j in f.merged):
            attach_scaling(doc["cells"])
        not_run = [j for j in sorted(f.indices) if j not in f.merged]
        if g.primary == f.key:  # the group's cells no node has taken yet
            not_run += sorted({j for j, _ in g.pending if j not in g.assigned and j not in g.stopped})
        doc["not_run"] = [self.cells[j].id for j in sorted(set(not_run))]
        if self.planned > 1:
            doc["incomplete"] = [self.cells[j].id for j in sorted(f.merged) if j not in g.stopped
                                 and len(g.records.get(j, [])) < self.planned]
        f.writer.save(doc, final=final)

    def _finish(self) -> FleetOutcome:
        outcomes = []
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        order = {g.name: k for k, g in enumerate(self.groups)}
        for key in sorted(self.files, key=lambda k: (order[k[0]], self.nodes[k[1]].name if k[1] else "")):
            f = self.files[key]
            f.doc["finished"] = stamp
            f.doc["complete"] = not self.interrupted and not f.doc.get("not_run")
            f.doc["interrupted"] = self.interrupted
            self._save(f, final=True)
            counts = {s: sum(1 for c in f.doc["cells"] if c["status"] == s) for s in results.STATUSES}
            outcomes.append(RunOutcome(path=f.path, doc=f.doc, interrupted=self.interrupted, counts=counts,
                                       write_error=f.writer.final_error(len(f.doc["cells"])),
                                       fallback=f.writer.fallback))
        return FleetOutcome(outcomes=outcomes, interrupted=self.interrupted, address=self.address)


def _cell_line(group: str, node: Node | None, cell: dict[str, Any]) -> str:
    """The runner's console line of a finished cell (root cause of a failure included),
    labelled with its target and node."""
    from harness.launch.runner import cell_line

    return str(cell_line(cell, label=f"  [{group}{'@' + node.name if node is not None else ''}]"))


__all__ = ["run_fleet", "connect", "FleetError", "FleetOutcome", "Node", "parse_nodes", "target_matches",
           "needs", "SLOT_RESOURCE", "NODE_LOST"]
