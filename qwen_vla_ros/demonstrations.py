"""Scripted demonstrations in the simulator, written as LeRobot v3.0 datasets (pure core).

``qwen-vla collect`` runs a task's scripted expert (:mod:`.sim.experts`) for N episodes and
writes what the robot saw and did, on the embodiment's control grid, with the instruction
of each episode:

* ALOHA tasks go through :class:`~.training.sim_env.AlohaSimEnv`, the deployed path without
  the middleware: the state comes through the rig's observation assembler and every
  command through the rig's safety limiter and command mapping, so the recorded action is
  the command the arms received.
* ``drive_to_color`` drives the navigation world's base with the expert's ``cmd_vel``;
  as for recordings, the action stored per frame is the odometry motion to the next frame
  (see :mod:`.data.chunks`).

``--via-graph`` records the same demonstrations through the ROS graph instead
(:mod:`.nodes.graph_collect`: the sim bridge teleoperated by the expert, the recorder,
``convert``); the datasets are the same in schema and frames (``test_e2e_collect_paths``).

Frame t holds the cameras and state observed at t and the action sent at t. Cameras are
rendered at ``camera_rate_hz`` (default 10 Hz, the sim bridge's rate) and repeat on the
control grid in between, as a recording of the graph would hold them. Episodes whose
expert failed are not written (and counted). Seeds are consecutive from ``first_seed``:
keep evaluation seeds (``EVAL_SEED_START`` on) apart from them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.chunks import pose_steps
from .data.lerobot_v3 import EpisodeData, LeRobotV3Writer
from .data.video import VIDEO_QUALITY
from .embodiment import Embodiment, load_embodiment

#: Seeds from here on are for evaluation; collect refuses them.
EVAL_SEED_START = 100_000

#: Instruction phrasings per task; ``{goal}`` is the colour the episode is scored against.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "transfer_cube": (
        "pick up the cube with the right arm and hand it to the left arm",
        "transfer the red cube to the left arm",
        "hand the cube over from the right gripper to the left gripper",
    ),
    "insertion": (
        "insert the peg into the socket",
        "put the red peg into the blue socket",
        "pick up the peg and the socket and fit them together",
    ),
    "pick_color": (
        "pick up the {goal} cube",
        "lift the {goal} block",
        "grab the {goal} cube and lift it",
        "pick the {goal} one up",
    ),
    "drive_to_color": (
        "drive to the {goal} box",
        "go over to the {goal} box",
        "move next to the {goal} box",
        "navigate to the {goal} one",
    ),
}
#: The embodiment each task runs on by default.
TASK_EMBODIMENTS = {
    "transfer_cube": "aloha_sim",
    "insertion": "aloha_sim",
    "pick_color": "aloha_sim",
    "drive_to_color": "mobile_base",
}


def task_goal(task: str, seed: int) -> str | None:
    """The goal (colour) the simulator scores an episode of ``task`` on ``seed`` against."""
    if task == "pick_color":
        from .sim.aloha_tasks import sample_pick_color

        return sample_pick_color(seed)[1]
    if task == "drive_to_color":
        from .sim.base_scene import sample_box_layout

        return sample_box_layout(seed)[1]
    return None


def instruction_for(task: str, goal: str | None, seed: int) -> str:
    """One phrasing of the task, picked by the seed (reproducible)."""
    if task not in INSTRUCTIONS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(INSTRUCTIONS)}")
    template = random.Random(seed).choice(INSTRUCTIONS[task])
    if "{goal}" in template and goal is None:
        raise ValueError(f"task {task!r} needs a goal colour")
    return template.format(goal=goal)


@dataclass
class CollectReport:
    """What a collection run produced."""

    task: str
    written: int = 0
    failed_seeds: list[int] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def attempted(self) -> int:
        return self.written + len(self.failed_seeds)

    @property
    def success_rate(self) -> float:
        return self.written / self.attempted if self.attempted else 0.0


#: Camera frames per simulated second (the sim bridge's default camera_rate_hz).
CAMERA_RATE_HZ = 10.0
#: Video settings of collected datasets: lossless, full colour resolution (x264 crf 0, 4:4:4).
#: The simulated cameras are small (a cube is 2-3 px wide at 96x96): LeRobot's crf 30 / 4:2:0
#: smeared the cubes' colours into their neighbours and left coloured ghosts (measured on 30
#: frames: mean error 2.5 levels, p99.9 60, peak saturation 183 -> 121), so the model trained
#: on colours the simulator never shows. Lossless: error 0.05 levels, 724 bytes per 96x96
#: frame (crf 30 4:2:0: 227). H.264, not SVT-AV1: three SVT-AV1 encoders in one long run hung
#: here twice (futex waits after ~35 episodes).
COLLECT_VIDEO_QUALITY = "lossless"  # also what `collect --via-graph` converts with
COLLECT_VIDEO = VIDEO_QUALITY[COLLECT_VIDEO_QUALITY]


def _frame_every(embodiment: Embodiment, camera_rate_hz: float) -> int:
    """Control steps per camera frame."""
    return max(1, round(embodiment.control_rate_hz / camera_rate_hz))


class ArmPerturbation:
    """Smooth random offsets (rad) on the arm joints' commands: an Ornstein-Uhlenbeck process
    with standard deviation ``std_rad`` and correlation time ``tau_s``, zero on grippers.

    DART-style demonstrations (Laskey et al., 2017): the expert's commands are executed with
    these offsets, so the arms visit states off the expert's own path, while the recorded
    action stays the expert's clean command: the policy learns to steer back to the path,
    which it must do in closed loop once its own small errors have moved the arm off it.
    """

    def __init__(self, embodiment: Embodiment, std_rad: float, seed: int, tau_s: float = 0.4) -> None:
        self.mask = np.zeros(embodiment.action_dim)
        for group in embodiment.action_groups:
            if group.kind != "gripper":
                self.mask[embodiment.group_slices[group.name]] = 1.0
        self.std, self.decay = std_rad, float(np.exp(-embodiment.dt / tau_s))
        self.rng = np.random.default_rng(seed)
        self.offset = self.rng.normal(0.0, std_rad, embodiment.action_dim) * self.mask

    def sample(self) -> np.ndarray:
        """The next control step's offsets (rad); stationary standard deviation ``std_rad``."""
        innovation = self.rng.normal(0.0, self.std * np.sqrt(1.0 - self.decay**2), self.offset.shape)
        self.offset = self.decay * self.offset + innovation * self.mask
        return self.offset


def _aloha_episode(env, task: str, seed: int, camera_rate_hz: float,
                   perturbation_rad: float = 0.0, takeover: PolicyTakeover | None = None) -> tuple[EpisodeData, bool]:
    from .sim.experts import expert_for

    env.reset(seed)
    if takeover is not None:
        takeover.drive(env, seed)
    expert = expert_for(task)
    expert.reset(env.sim)
    instruction = instruction_for(task, env.sim.goal, seed)
    env.instruction = instruction
    emb = env.embodiment
    states, actions, images, solved = [], [], {c: [] for c in emb.camera_names}, False
    every = _frame_every(emb, camera_rate_hz)
    perturbation = ArmPerturbation(emb, perturbation_rad, seed) if perturbation_rad > 0 else None
    label = env.state()  # the unperturbed command stream, limited as the rig would limit it
    for step in range(expert.episode_steps):
        states.append(env.state())
        for camera, frames in images.items():
            frames.append(env.rig.camera_view(camera) if step % every == 0 else frames[-1])
        clean = expert.action()
        if perturbation is None:
            result = env.step(clean)
            actions.append(result.applied)
        else:  # executed off the path, recorded as the rig would have executed the clean command
            result = env.step(clean + perturbation.sample())
            label = env.limited(clean, label)
            actions.append(label)
        solved = solved or result.done
    episode = EpisodeData(
        task=instruction, state=np.asarray(states), action=np.asarray(actions),
        images={c: np.stack(frames) for c, frames in images.items()}, label=_episode_label(seed, takeover),
    )
    return episode, solved


def _episode_label(seed: int, takeover: PolicyTakeover | None) -> str:
    """How errors about the episode name it: its seed, and where the expert took over from a policy."""
    if takeover is None:
        return f"seed {seed}"
    return f"seed {seed}, expert after {takeover.taken_at[-1]} policy steps"


class PolicyTakeover:
    """Recovery demonstrations, DAgger-style (Ross et al., 2011): a policy acts first, then the
    expert takes over from wherever the policy left the robot and finishes the task.

    Each episode the policy (a :class:`~.model.policy.QwenVLAPolicy`, driven as the deployed
    graph drives it: synchronous chunks, key-pose latching) runs for a number of control steps
    drawn uniformly from ``steps`` (inclusive range); only the expert's part is recorded, from
    the state the policy reached. The expert replans from the arms' and objects' poses at that
    moment, so its first commands continue from the measured state (no jump, unlike DART's
    clean labels). Successful takeovers teach the last centimetres from the states the
    policy's own errors lead to, which the expert's demonstrations never visit.
    """

    def __init__(self, policy, embodiment: Embodiment, steps: tuple[int, int], seed: int = 0) -> None:
        if not 0 <= steps[0] <= steps[1]:
            raise ValueError(f"takeover steps must be 0 <= low <= high, got {steps}")
        self.policy, self.embodiment, self.steps = policy, embodiment, steps
        self.rng = np.random.default_rng(seed)
        self.taken_at: list[int] = []  # the policy's steps of each episode (diagnostics)

    def drive(self, env, seed: int) -> None:
        """Run the policy on ``env`` (just reset on ``seed``) for the drawn number of steps."""
        from .sim_rollouts import PolicyDriver, new_latch

        steps = int(self.rng.integers(self.steps[0], self.steps[1] + 1))
        env.instruction = instruction_for(env.sim.task_name, env.sim.goal, seed)
        driver = PolicyDriver(self.policy, self.embodiment, new_latch(self.embodiment))
        for step in range(steps):
            env.step(driver.act(env.observe, seed * 1000 + step))
        self.taken_at.append(steps)


def drive_expert_episode(rig, seed: int, before_step: Callable[[int], None] | None = None) -> tuple[np.ndarray, bool]:
    """Run ``drive_to_color``'s scripted expert on ``rig``'s world from ``seed``'s reset: the
    base's poses (T + 1, 3: x, y m, yaw rad) and whether it succeeded without touching a box.
    ``before_step(step)`` runs before each control step (to record the cameras)."""
    from .sim.experts import DriveToColorExpert

    rig.reset(seed=seed)
    world, expert = rig.world, DriveToColorExpert()
    expert.reset(world)
    poses, solved = [world.pose], False
    for step in range(expert.episode_steps):
        if before_step is not None:
            before_step(step)
        world.set_cmd_vel(*expert.velocity())
        rig.step(rig.embodiment.dt)
        poses.append(world.pose)
        solved = solved or rig.success()
    return np.asarray(poses, dtype=np.float64), solved and not world.collided


def _nav_episode(rig, task: str, seed: int, camera_rate_hz: float) -> tuple[EpisodeData, bool]:
    embodiment = rig.embodiment
    images = {c: [] for c in embodiment.camera_names}
    every = _frame_every(embodiment, camera_rate_hz)

    def record_cameras(step: int) -> None:
        for camera, frames in images.items():
            frames.append(rig.camera_view(camera) if step % every == 0 else frames[-1])

    poses, solved = drive_expert_episode(rig, seed, record_cameras)
    instruction = instruction_for(task, rig.world.goal, seed)
    steps = pose_steps(poses)
    # Waypoint groups have no measured state (embodiment convention): zeros.
    episode = EpisodeData(
        task=instruction, state=np.zeros_like(steps), action=steps,
        images={c: np.stack(frames) for c, frames in images.items()}, label=f"seed {seed}",
    )
    return episode, solved


def collect(
    task: str,
    out: str | Path,
    episodes: int,
    *,
    embodiment: str | Embodiment | None = None,
    first_seed: int = 0,
    overwrite: bool = False,
    camera_rate_hz: float = CAMERA_RATE_HZ,
    perturbation_rad: float = 0.0,
    takeover: PolicyTakeover | None = None,
    progress: Callable[[str], None] | None = None,
) -> CollectReport:
    """Run the task's expert for ``episodes`` seeds and write the successful episodes.

    ``perturbation_rad`` > 0 (ALOHA tasks): execute the expert with smooth arm offsets of that
    standard deviation and record its clean commands (:class:`ArmPerturbation`).
    ``takeover`` (ALOHA tasks): a policy acts first, the expert finishes; only the expert's
    part is recorded (:class:`PolicyTakeover`)."""
    if first_seed + episodes > EVAL_SEED_START:
        raise ValueError(f"seeds from {EVAL_SEED_START} on are kept for evaluation; "
                         f"collect uses {first_seed} .. {first_seed + episodes - 1}")
    emb = embodiment if isinstance(embodiment, Embodiment) else load_embodiment(embodiment or TASK_EMBODIMENTS[task])
    report, clock = CollectReport(task), time.perf_counter()
    run_one, close = _episode_runner(emb, task, camera_rate_hz, perturbation_rad, takeover)
    waypoints = tuple(emb.group_slices[g.name] for g in emb.action_groups if g.kind == "base_waypoints")
    try:
        with LeRobotV3Writer(
            out, fps=emb.control_rate_hz, names=emb.action_names,
            cameras={c.name: tuple(c.image_size) for c in emb.cameras}, robot_type=emb.name,
            overwrite=overwrite, horizon=emb.chunk_horizon, waypoint_slices=waypoints, **COLLECT_VIDEO,
            extra_info={"qwen_vla": {"embodiment": emb.name, "source": f"scripted expert: {task}",
                                     "seeds": [first_seed, first_seed + episodes - 1],
                                     "perturbation_rad": perturbation_rad,
                                     **({"takeover_steps": list(takeover.steps)} if takeover else {})}},
        ) as writer:
            for seed in range(first_seed, first_seed + episodes):
                episode, solved = run_one(seed)
                if solved:
                    writer.add_episode(episode)
                    report.written += 1
                    report.frames += len(episode.action)
                else:
                    report.failed_seeds.append(seed)
                if progress:
                    progress(f"[collect] {task} seed {seed}: {'ok' if solved else 'FAILED'} "
                             f"({report.written} written, {len(report.failed_seeds)} failed)")
    finally:
        close()
    report.seconds = time.perf_counter() - clock
    return report


def _episode_runner(emb: Embodiment, task: str, camera_rate_hz: float, perturbation_rad: float = 0.0,
                    takeover: PolicyTakeover | None = None):
    kinds = {g.kind for g in emb.action_groups}
    if task == "drive_to_color":
        if kinds != {"base_waypoints"}:
            raise ValueError(f"drive_to_color needs a waypoint base embodiment, {emb.name} is not one")
        if perturbation_rad or takeover:
            raise ValueError("--perturbation and --takeover-from are for the ALOHA tasks (arm joints)")
        from .sim.rig import RIG_FRAME_SIZE, SimRig

        rig = SimRig(emb, task=task, render_size=RIG_FRAME_SIZE)
        return (lambda seed: _nav_episode(rig, task, seed, camera_rate_hz)), rig.close
    from .training.sim_env import AlohaSimEnv

    env = AlohaSimEnv(emb, task, instruction="")
    return (lambda seed: _aloha_episode(env, task, seed, camera_rate_hz, perturbation_rad, takeover)), env.close


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--task", required=True, choices=sorted(INSTRUCTIONS))
    parser.add_argument("--episodes", type=int, default=50, help="expert episodes to run")
    parser.add_argument("--out", required=True, help="dataset folder to write (LeRobot v3.0)")
    parser.add_argument("--embodiment", help="default: the task's (aloha_sim or mobile_base)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+N-1")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--perturbation", type=float, default=0.0, metavar="RAD",
                        help="ALOHA tasks: run the expert with smooth arm-joint offsets of this standard "
                             "deviation (rad) and record its clean commands (DART); default 0")
    parser.add_argument("--takeover-from", metavar="MODEL",
                        help="ALOHA tasks: a policy (checkpoint folder or shipped name, e.g. sim_demo) acts first, then the expert takes "
                             "over and finishes; only the expert's part is recorded (DAgger-style recovery)")
    parser.add_argument("--takeover-steps", type=int, nargs=2, default=(50, 200), metavar=("LOW", "HIGH"),
                        help="--takeover-from: the policy's control steps per episode, drawn uniformly "
                             "from LOW..HIGH (default 50 200)")
    parser.add_argument("--via-graph", action="store_true",
                        help="record through the ROS graph (sim bridge with its expert teleoperator, "
                             "recorder, convert) instead of running the sim in-process")
    parser.add_argument("--recordings", help="--via-graph: folder for the MCAP file and node logs "
                                             "(default <out>-recordings)")


def run(args) -> int:
    if args.via_graph and (args.perturbation or args.takeover_from):
        print("[collect] --perturbation and --takeover-from run in-process; they do not combine with --via-graph")
        return 2
    if args.via_graph:
        # the graph path is a ROS program: rclpy is imported only when it is chosen
        from .bringup import StopRequest
        from .nodes.graph_collect import collect_via_graph

        stop = StopRequest()
        try:
            report = collect_via_graph(args.task, args.out, args.episodes, embodiment=args.embodiment,
                                       first_seed=args.first_seed, overwrite=args.overwrite, recordings=args.recordings,
                                       progress=print, stop=lambda: stop.signal is not None)
        except (RuntimeError, TimeoutError, FileExistsError) as exc:
            print(f"[collect] FAILED: {exc}")
            return 1
    else:
        takeover = None
        if args.takeover_from:
            from .model.policy import QwenVLAPolicy
            from .model.shipped import SHIPPED_MODELS, shipped_model_dir

            emb = load_embodiment(args.embodiment or TASK_EMBODIMENTS[args.task])
            source = shipped_model_dir(args.takeover_from) if args.takeover_from in SHIPPED_MODELS else args.takeover_from
            policy = QwenVLAPolicy.from_pretrained(source).eval()
            takeover = PolicyTakeover(policy, emb, tuple(args.takeover_steps), seed=args.first_seed)
        report = collect(args.task, args.out, args.episodes, embodiment=args.embodiment,
                         first_seed=args.first_seed, overwrite=args.overwrite,
                         perturbation_rad=args.perturbation, takeover=takeover, progress=print)
    print(f"[collect] {report.task}: expert success {report.written}/{report.attempted} "
          f"({100 * report.success_rate:.1f}%), {report.frames} frames written to {args.out} "
          f"in {report.seconds:.0f} s; failed seeds: {report.failed_seeds or 'none'}")
    return 0 if report.written else 1
