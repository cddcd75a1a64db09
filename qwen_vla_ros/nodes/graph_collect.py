"""`qwen-vla collect --via-graph`: expert demonstrations recorded through the ROS graph.

The way a lab records: the robot (the sim bridge, in its own process, on simulated time)
is driven by a teleoperator, here the sim bridge's own scripted expert (``expert: true``,
:mod:`..sim.expert_teleop`), which streams commands on the embodiment's command topics; a
:class:`~.recorder_node.RecorderNode` records every topic to MCAP, one episode per
instruction; an operator (:class:`ExpertEpisodeOperator`) gives each seed's instruction,
waits for the expert to finish, judges the episode by the expert's outcome, and resets the
sim to the next seed. ``convert`` then writes the LeRobot v3.0 dataset, leaving out the
episodes judged failed, as the direct path (:func:`..demonstrations.collect`) does.

No model runs: the graph is the sim bridge alone (``GraphConfig(policy=False)``); the
recorder and the operator share this process and one executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from ..bringup import Graph, GraphConfig
from ..data.convert import convert_recordings
from ..demonstrations import (
    COLLECT_VIDEO_QUALITY,
    EVAL_SEED_START,
    TASK_EMBODIMENTS,
    CollectReport,
    instruction_for,
    task_goal,
)
from ..embodiment import load_embodiment
from ..ros.qos import LATCHED, RECORD_RELIABLE
from .common import call_service
from .recorder_node import RecorderNode

#: Wall seconds allowed for starting the graph (imports, MuJoCo, discovery) and for one expert
#: run (at most 12 simulated s, which a loaded 2-core machine renders slower than real time).
START_TIMEOUT_S = 120.0
EPISODE_TIMEOUT_S = 300.0
#: Wall seconds a recorder behind on a loaded machine may take to receive an episode's last
#: messages (a lost sample of a reliable topic waits for the writer's next heartbeat).
CATCH_UP_TIMEOUT_S = 60.0
#: Simulated time the operator leaves a new scene alone before giving the instruction, s: a
#: reset lands between two control steps, and the state published at the step it shares a
#: stamp with still shows the old scene; an episode starting at that stamp would open with it.
SETTLE_S = 0.3


class ExpertEpisodeOperator(Node):
    """Gives instructions, resets the sim, hears the expert's outcomes, judges episodes."""

    def __init__(self, **kwargs):
        super().__init__("collect_operator", parameter_overrides=[Parameter("use_sim_time", value=True)], **kwargs)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.reset_client = self.create_client(Trigger, "sim_bridge/reset")
        self.finish_client = self.create_client(SetBool, "recorder/finish_episode")
        self.outcomes: list[bool] = []
        self.done_sub = self.create_subscription(Bool, "sim_bridge/expert_done", self._on_done, RECORD_RELIABLE)

    def _on_done(self, msg: Bool) -> None:
        self.outcomes.append(bool(msg.data))

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))


class _GraphSession:
    """The sim bridge process, the recorder and the operator, with a deadline per wait."""

    def __init__(self, embodiment: str, task: str, first_seed: int, folder: Path, stop: Callable[[], bool] | None):
        config = GraphConfig(embodiment=embodiment, sim=True, policy=False,
                             extra={"sim_bridge": {"task": task, "seed": first_seed, "expert": True}})
        self.graph = Graph(config, log_dir=folder / "logs")
        self.folder, self.embodiment, self.stop = folder, embodiment, stop or (lambda: False)

    def __enter__(self) -> _GraphSession:
        self.graph.start()
        self.context = rclpy.Context()
        self.recorder = self.operator = self.executor = None
        try:
            rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
            self.recorder = RecorderNode(context=self.context, parameter_overrides=[
                Parameter("embodiment", value=self.embodiment), Parameter("output_dir", value=str(self.folder)),
                Parameter("use_sim_time", value=True), Parameter("record_chunks", value=False)])
            self.operator = ExpertEpisodeOperator(context=self.context)
            self.executor = SingleThreadedExecutor(context=self.context)
            for node in (self.recorder, self.operator):
                self.executor.add_node(node)
        except BaseException:
            self.__exit__()  # __exit__ does not run when __enter__ fails: stop the sim here
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.recorder is not None:
                self.recorder.on_shutdown()  # closes the file (idempotent)
        finally:
            self.graph.stop()
            if self.executor is not None:
                self.executor.shutdown()
            for node in (self.recorder, self.operator):
                if node is not None:
                    node.destroy_node()
            if self.context.ok():
                rclpy.shutdown(context=self.context)

    def spin_until(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            self.executor.spin_once(timeout_sec=0.05)
            if self.stop():
                raise KeyboardInterrupt
            if self.graph.exited():
                raise RuntimeError(f"the sim bridge exited while {what}: {self.graph.exited()} "
                                   f"(see {self.graph.log_dir}/sim_bridge.log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s while {what} "
                                   f"(see {self.graph.log_dir}/sim_bridge.log)")

    def call(self, client, request, what: str) -> object:
        # START_TIMEOUT_S for each wait: the first call waits for the service to appear
        return call_service(client, request, what, lambda done, doing: self.spin_until(done, doing, START_TIMEOUT_S))

    def wait_until_ready(self) -> None:
        """Until the recorder follows every topic, the sim hears the instruction and /clock runs."""
        recorder, operator = self.recorder, self.operator
        self.spin_until(lambda: all(t.subscription is not None for t in recorder.topics.values()),
                        "waiting for the recorder to find every topic", START_TIMEOUT_S)
        # the sim bridge's two instruction subscriptions and the recorder's
        self.spin_until(lambda: operator.instruction_pub.get_subscription_count() >= 3
                        and operator.done_sub.get_publisher_count() >= 1 and recorder.now_ns() > 0,
                        "waiting for the sim bridge", START_TIMEOUT_S)

    def episode(self, instruction: str, reset: bool) -> bool:
        """One expert episode recorded from the instruction to the expert's outcome; returns it."""
        operator = self.operator
        if reset:
            self.call(operator.reset_client, Trigger.Request(), "resetting the sim to the next seed")
            settled = self.recorder.now_ns() + round(SETTLE_S * 1e9)
            self.spin_until(lambda: self.recorder.now_ns() >= settled, "letting the new scene settle", 60.0)
        heard = len(operator.outcomes)
        operator.instruct(instruction)
        self.spin_until(lambda: len(operator.outcomes) > heard, f"the expert ran '{instruction}'",
                        EPISODE_TIMEOUT_S)
        solved = operator.outcomes[heard]
        finished = self.recorder.now_ns()
        self.spin_until(lambda: self.recorder.caught_up_to(finished),
                        "waiting for the recorder to receive the run's last messages", CATCH_UP_TIMEOUT_S)
        self.call(operator.finish_client, SetBool.Request(data=solved), "ending the recorded episode")
        operator.instruct("")  # the sim stops scoring the old instruction before the world jumps
        return solved


def collect_via_graph(
    task: str,
    out: str | Path,
    episodes: int,
    *,
    embodiment: str | None = None,
    first_seed: int = 0,
    overwrite: bool = False,
    recordings: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> CollectReport:
    """Record ``episodes`` expert episodes through the graph, then convert them to ``out``.

    ``recordings``: folder for the MCAP file and the node logs (default ``<out>-recordings``).
    ``stop``: polled while waiting; True interrupts (KeyboardInterrupt).
    """
    if first_seed + episodes > EVAL_SEED_START:
        raise ValueError(f"seeds from {EVAL_SEED_START} on are kept for evaluation; "
                         f"collect uses {first_seed} .. {first_seed + episodes - 1}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (--overwrite replaces it)")
    embodiment = embodiment or TASK_EMBODIMENTS[task]
    folder = Path(recordings) if recordings else out.with_name(out.name + "-recordings")
    folder.mkdir(parents=True, exist_ok=True)
    report, clock, say = CollectReport(task), time.perf_counter(), progress or (lambda line: None)
    outcomes: dict[int, bool] = {}
    with _GraphSession(embodiment, task, first_seed, folder, stop) as session:
        say(f"[collect] {task} through the graph (sim bridge with its expert teleoperator, recorder); "
            f"logs in {folder / 'logs'}")
        session.wait_until_ready()
        for k, seed in enumerate(range(first_seed, first_seed + episodes)):
            instruction = instruction_for(task, task_goal(task, seed), seed)
            outcomes[seed] = session.episode(instruction, reset=k > 0)
            report.failed_seeds += [] if outcomes[seed] else [seed]
            say(f"[collect] {task} seed {seed}: {'ok' if outcomes[seed] else 'FAILED'} "
                f"({sum(outcomes.values())} recorded, {len(report.failed_seeds)} failed)")
        recording = session.recorder.path
    stats = session.recorder.stats
    lost = {topic: s["dropped"] for topic, s in stats.items() if s["dropped"]}
    if lost:
        say(f"[collect] WARNING: messages lost in the recording (conversion bridges short gaps): {lost}")
    if any(outcomes.values()):
        converted = convert_recordings([recording], out, load_embodiment(embodiment), overwrite=overwrite,
                                       video_quality=COLLECT_VIDEO_QUALITY, progress=False)
        report.written, report.frames = converted.episodes, converted.frames
        say(f"[collect] converted {recording.name}: {converted}")
        if converted.episodes != sum(outcomes.values()):
            say(f"[collect] WARNING: {sum(outcomes.values())} solved episodes became {converted.episodes} "
                "dataset episodes (see the conversion report above)")
    report.seconds = time.perf_counter() - clock
    return report
